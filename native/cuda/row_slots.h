// The host half of a GPU index's removes, upserts and compactions: which device slots are
// live, and which row each slot holds. Plain C++ (no CUDA) so that ctest checks it on
// machines without a GPU (native/core/tests/test_gpu_slots.cpp).
//
// Rows and slots follow the CPU indexes (native/core/flat.h): every stored vector takes the
// next row number for the life of the index, and allow bitsets address rows. The device
// arrays hold vectors by slot; slot == row until a compaction drops the slots of removed rows.
// Slots appended after a compaction hold consecutive rows again, so the map is a table over
// the slots the last compaction kept plus a constant offset for the slots after them: adds
// never copy it.
//
// A RowSlots value is immutable once published (a search reads the one it took); each write
// builds the next one. The live bitset (one bit per slot, null while every slot is live) is
// copied on write, as the CPU FlatIndex's is, and mirrored on the device by the index, where
// the scan kernels AND it into the allow bitset.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace ebrix::gpu {

struct RowSlots {
  size_t slots = 0;  // device slots, tombstones included
  size_t rows = 0;   // row numbers handed out
  size_t live = 0;   // slots not removed
  // Bit s set when slot s is live, over [0, slots); null when every slot is.
  std::shared_ptr<const std::vector<uint32_t>> liveBits;
  // The rows of slots [0, table->size()) after a compaction (ascending); null before any.
  // Slot s past the table holds row s + rowOffset.
  std::shared_ptr<const std::vector<uint32_t>> table;
  size_t rowOffset = 0;

  uint32_t rowOfSlot(size_t slot) const;
  // The slot holding `row`, or -1 when none does (a row a compaction dropped, or not yet numbered).
  int64_t slotOfRow(uint32_t row) const;
  bool slotLive(size_t slot) const;
};

// The state after appending `count` slots (new rows), with `replaced` slots (an upsert's old
// rows, all live and distinct) made tombstones.
RowSlots appendSlots(const RowSlots& from, size_t count, const std::vector<uint32_t>& replaced = {});

// The state with `slots` (live and distinct) made tombstones.
RowSlots removeSlots(const RowSlots& from, const std::vector<uint32_t>& slots);

// The allow bitset a scan takes, over slots [0, state.slots): bit s set when slot s is live
// and its row is allowed by `rowAllow` (bit r of word r / 32; rows past the last word are not
// allowed). Null rowAllow: the live bits alone (all set when none is removed).
std::vector<uint32_t> slotAllow(const RowSlots& state, const uint32_t* rowAllow, size_t rowWords);

struct Compaction {
  std::vector<uint32_t> kept;     // the old slots that survive, ascending; new slot i = kept[i]
  std::vector<uint32_t> newSlot;  // old slot -> new slot, kNoSlot for a dropped one
  RowSlots after;
};
constexpr uint32_t kNoSlot = 0xFFFFFFFFu;

// What compact() moves: the live slots, renumbered 0 .. live-1 in order, rows unchanged.
Compaction planCompaction(const RowSlots& state);

}  // namespace ebrix::gpu
