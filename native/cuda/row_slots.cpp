#include "row_slots.h"

#include <algorithm>

#include "../core/row_bits.h"

namespace ebrix::gpu {

uint32_t RowSlots::rowOfSlot(size_t slot) const {
  if (table && slot < table->size()) return (*table)[slot];
  return static_cast<uint32_t>(slot + rowOffset);
}

int64_t RowSlots::slotOfRow(uint32_t row) const {
  if (row >= rows) return -1;
  const size_t tableSize = table ? table->size() : 0;
  if (row >= tableSize + rowOffset) return static_cast<int64_t>(row - rowOffset);
  if (!table) return -1;
  const auto it = std::lower_bound(table->begin(), table->end(), row);
  if (it == table->end() || *it != row) return -1;
  return it - table->begin();
}

bool RowSlots::slotLive(size_t slot) const {
  return slot < slots && (!liveBits || testBit(liveBits->data(), liveBits->size(), slot));
}

RowSlots appendSlots(const RowSlots& from, size_t count, const std::vector<uint32_t>& replaced) {
  RowSlots next = from;
  next.slots = from.slots + count;
  next.rows = from.rows + count;
  next.live = from.live + count - replaced.size();
  if (from.liveBits || !replaced.empty()) {
    auto bits = std::make_shared<std::vector<uint32_t>>(from.liveBits ? *from.liveBits : allBits(from.slots));
    extendSet(*bits, from.slots, next.slots);
    for (uint32_t slot : replaced) clearBit(*bits, slot);
    next.liveBits = std::move(bits);
  }
  return next;
}

RowSlots removeSlots(const RowSlots& from, const std::vector<uint32_t>& slots) {
  RowSlots next = from;
  if (slots.empty()) return next;
  auto bits = std::make_shared<std::vector<uint32_t>>(from.liveBits ? *from.liveBits : allBits(from.slots));
  for (uint32_t slot : slots) clearBit(*bits, slot);
  next.liveBits = std::move(bits);
  next.live = from.live - slots.size();
  return next;
}

std::vector<uint32_t> slotAllow(const RowSlots& state, const uint32_t* rowAllow, size_t rowWords) {
  std::vector<uint32_t> out;
  if (rowAllow == nullptr) {
    return state.liveBits ? *state.liveBits : allBits(state.slots);
  }
  out.assign(bitWords(state.slots), 0u);
  if (!state.table && state.rowOffset == 0) {
    // slot == row: the caller's words, cut to the slots, with the live bits ANDed in.
    const size_t words = std::min(out.size(), rowWords);
    for (size_t w = 0; w < words; ++w) out[w] = rowAllow[w];
    if (state.slots % 32 != 0 && words == out.size()) out.back() &= (1u << (state.slots % 32)) - 1u;
  } else {
    for (size_t s = 0; s < state.slots; ++s) {
      if (testBit(rowAllow, rowWords, state.rowOfSlot(s))) setBit(out, s);
    }
  }
  if (state.liveBits) {
    for (size_t w = 0; w < out.size(); ++w) out[w] &= (*state.liveBits)[w];
  }
  return out;
}

Compaction planCompaction(const RowSlots& state) {
  Compaction plan;
  plan.newSlot.assign(state.slots, kNoSlot);
  plan.kept.reserve(state.live);
  auto table = std::make_shared<std::vector<uint32_t>>();
  table->reserve(state.live);
  for (size_t s = 0; s < state.slots; ++s) {
    if (!state.slotLive(s)) continue;
    plan.newSlot[s] = static_cast<uint32_t>(plan.kept.size());
    plan.kept.push_back(static_cast<uint32_t>(s));
    table->push_back(state.rowOfSlot(s));
  }
  plan.after.slots = plan.kept.size();
  plan.after.rows = state.rows;
  plan.after.live = plan.kept.size();
  // Slots appended from now on hold rows state.rows, state.rows + 1, ...
  plan.after.rowOffset = state.rows - plan.kept.size();
  plan.after.table = std::move(table);
  return plan;
}

}  // namespace ebrix::gpu
