// Memory for what lives as long as a tracked connection: its Connection and its table node,
// and the span assembler's same-host queue of a client connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory_resource>
#include <vector>

namespace flowtracer::conntrack {

// Same-size slots in 64 KiB blocks mapped apart from the malloc heap; a block goes back to
// the system when its last slot is freed (one empty block per size is kept for churn).
// From the general heap these objects, made during a burst of connections among the
// burst's short-lived allocations, kept whole pages resident after the burst was gone:
// 6 000 idle connections opened during a burst held 38 MB. Slots are taken from the
// oldest block with room, so long-lived objects gather in the first blocks and the later
// ones, emptied as the burst ends, go back. Sizes above
// kMaxSlotBytes (the table's bucket array) go to the heap.
class ConnectionMemory final : public std::pmr::memory_resource {
 public:
  static constexpr size_t kBlockBytes = 64 * 1024;
  static constexpr size_t kMaxSlotBytes = 1024;
  static constexpr size_t kSlotAlign = 16;

  ConnectionMemory() = default;
  ConnectionMemory(const ConnectionMemory&) = delete;
  ConnectionMemory& operator=(const ConnectionMemory&) = delete;
  ~ConnectionMemory() override;  // unmaps every block: free what was allocated first

  size_t mapped_bytes() const { return blocks_ * kBlockBytes; }
  size_t in_use_bytes() const { return in_use_bytes_; }  // slots handed out

 private:
  struct Block;
  struct SizeClass {
    std::map<uint64_t, Block*> with_room;  // by serial: the oldest is used first
    Block* empty = nullptr;      // the one empty block kept
  };

  void* do_allocate(size_t bytes, size_t alignment) override;
  void do_deallocate(void* p, size_t bytes, size_t alignment) override;
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }
  Block* NewBlock(size_t slot_bytes);
  void Unmap(Block* block);

  std::vector<SizeClass> classes_ = std::vector<SizeClass>(kMaxSlotBytes / kSlotAlign);
  size_t blocks_ = 0;
  size_t in_use_bytes_ = 0;
  uint64_t next_serial_ = 0;
};

}  // namespace flowtracer::conntrack
