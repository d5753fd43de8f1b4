#include "agent/conntrack/connection_memory.h"

#include <sys/mman.h>

#include <cstdint>
#include <new>

namespace flowtracer::conntrack {

struct ConnectionMemory::Block {
  void* free_slots = nullptr;  // freed slots, linked through their first word
  size_t slot_bytes = 0;
  size_t used = 0;
  size_t capacity = 0;
  size_t never_used = 0;  // slots past this index were never handed out (pages untouched)
  uint64_t serial = 0;    // order of mapping

  std::byte* Slot(size_t index) {
    constexpr size_t kHeader = (sizeof(Block) + kSlotAlign - 1) / kSlotAlign * kSlotAlign;
    return reinterpret_cast<std::byte*>(this) + kHeader + index * slot_bytes;
  }
};

namespace {
size_t ClassOf(size_t bytes) { return (bytes + ConnectionMemory::kSlotAlign - 1) / ConnectionMemory::kSlotAlign - 1; }
}  // namespace

ConnectionMemory::~ConnectionMemory() {
  for (SizeClass& size_class : classes_) {
    for (auto& [serial, block] : size_class.with_room) Unmap(block);
    // Full blocks are not listed: their objects outlived this, which callers must not do.
  }
}

ConnectionMemory::Block* ConnectionMemory::NewBlock(size_t slot_bytes) {
  // Map twice the size and keep the aligned half, so a slot finds its block by masking.
  void* mapped = mmap(nullptr, 2 * kBlockBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) throw std::bad_alloc();
  auto start = reinterpret_cast<uintptr_t>(mapped);
  uintptr_t aligned = (start + kBlockBytes - 1) & ~(uintptr_t{kBlockBytes} - 1);
  if (aligned > start) munmap(mapped, aligned - start);
  if (uintptr_t end = start + 2 * kBlockBytes; end > aligned + kBlockBytes)
    munmap(reinterpret_cast<void*>(aligned + kBlockBytes), end - aligned - kBlockBytes);
  auto* block = new (reinterpret_cast<void*>(aligned)) Block;
  block->slot_bytes = slot_bytes;
  block->serial = next_serial_++;
  block->capacity = (kBlockBytes - static_cast<size_t>(block->Slot(0) - reinterpret_cast<std::byte*>(block))) / slot_bytes;
  ++blocks_;
  return block;
}

void ConnectionMemory::Unmap(Block* block) {
  munmap(block, kBlockBytes);
  --blocks_;
}

void* ConnectionMemory::do_allocate(size_t bytes, size_t alignment) {
  if (bytes == 0 || bytes > kMaxSlotBytes || alignment > kSlotAlign)
    return std::pmr::new_delete_resource()->allocate(bytes, alignment);
  SizeClass& size_class = classes_[ClassOf(bytes)];
  if (size_class.with_room.empty()) {
    Block* fresh = NewBlock((ClassOf(bytes) + 1) * kSlotAlign);
    size_class.with_room.emplace(fresh->serial, fresh);
  }
  Block* block = size_class.with_room.begin()->second;
  in_use_bytes_ += block->slot_bytes;
  void* slot;
  if (block->free_slots) {
    slot = block->free_slots;
    block->free_slots = *static_cast<void**>(slot);
  } else {
    slot = block->Slot(block->never_used++);
  }
  if (block == size_class.empty) size_class.empty = nullptr;
  if (++block->used == block->capacity) size_class.with_room.erase(block->serial);
  return slot;
}

void ConnectionMemory::do_deallocate(void* p, size_t bytes, size_t alignment) {
  if (bytes == 0 || bytes > kMaxSlotBytes || alignment > kSlotAlign)
    return std::pmr::new_delete_resource()->deallocate(p, bytes, alignment);
  SizeClass& size_class = classes_[ClassOf(bytes)];
  auto* block = reinterpret_cast<Block*>(reinterpret_cast<uintptr_t>(p) & ~(uintptr_t{kBlockBytes} - 1));
  in_use_bytes_ -= block->slot_bytes;
  *static_cast<void**>(p) = block->free_slots;
  block->free_slots = p;
  if (block->used-- == block->capacity) size_class.with_room.emplace(block->serial, block);
  if (block->used > 0) return;
  if (size_class.empty == nullptr) {
    size_class.empty = block;  // kept (still listed with room): connections churn
    return;
  }
  size_class.with_room.erase(block->serial);
  Unmap(block);
}

}  // namespace flowtracer::conntrack
