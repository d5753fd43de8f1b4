// An empty directory standing in for /proc: service names fall back to the comm.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace flowtracer {

class TempProcRoot {
 public:
  TempProcRoot() {
    char pattern[] = "/tmp/flowtracer-proc-XXXXXX";
    const char* dir = mkdtemp(pattern);
    EXPECT_NE(dir, nullptr);
    path_ = dir ? dir : "/nonexistent-flowtracer-proc";
  }
  ~TempProcRoot() {
    std::error_code error;
    std::filesystem::remove_all(path_, error);
  }
  TempProcRoot(const TempProcRoot&) = delete;
  TempProcRoot& operator=(const TempProcRoot&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace flowtracer
