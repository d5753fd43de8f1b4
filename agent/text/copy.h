// Copying bytes into a string that is kept for its storage.
#pragma once

#include <string>
#include <string_view>

namespace flowtracer::text {

// `to` = `from`, in `to`'s storage. assign() takes the general replace path (out of line,
// first testing whether `from` lies inside `to`), which doubled the cost of the short
// copies made per span; `from` must not be part of `to`.
inline void CopyInto(std::string& to, std::string_view from) {
  to.resize(from.size());
  std::char_traits<char>::copy(to.data(), from.data(), from.size());
}

}  // namespace flowtracer::text
