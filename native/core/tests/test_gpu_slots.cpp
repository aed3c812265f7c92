// The GPU indexes' host bookkeeping (native/cuda/row_slots.h) against a plain model: a list of
// (row, live) per slot, after random sequences of appends, upserts, removes and compactions.
#include <algorithm>
#include <random>
#include <vector>

#include "../../cuda/row_slots.h"
#include "../row_bits.h"
#include "check.h"

using namespace ebrix;
using namespace ebrix::gpu;

namespace {

struct ModelSlot {
  uint32_t row;
  bool live;
};

void checkAgainst(const RowSlots& state, const std::vector<ModelSlot>& model, size_t rows, std::mt19937& rng) {
  CHECK(state.slots == model.size());
  CHECK(state.rows == rows);
  size_t live = 0;
  std::vector<int64_t> slotOf(rows, -1);
  for (size_t s = 0; s < model.size(); ++s) {
    CHECK_MSG(state.rowOfSlot(s) == model[s].row, "slot " << s);
    CHECK_MSG(state.slotLive(s) == model[s].live, "slot " << s);
    live += model[s].live ? 1 : 0;
    slotOf[model[s].row] = static_cast<int64_t>(s);
  }
  CHECK(state.live == live);
  for (uint32_t r = 0; r < rows; ++r) CHECK_MSG(state.slotOfRow(r) == slotOf[r], "row " << r);
  CHECK(state.slotOfRow(static_cast<uint32_t>(rows)) == -1);
  // An allow bitset over rows (sometimes shorter than the rows), translated to slots.
  const size_t words = bitWords(rows) - (rows > 64 && rng() % 3 == 0 ? 1 : 0);
  std::vector<uint32_t> allow(words);
  for (auto& w : allow) w = static_cast<uint32_t>(rng());
  const std::vector<uint32_t> bits = slotAllow(state, allow.data(), allow.size());
  const std::vector<uint32_t> liveOnly = slotAllow(state, nullptr, 0);
  CHECK(bits.size() == bitWords(model.size()));
  CHECK(liveOnly.size() == bitWords(model.size()));
  for (size_t s = 0; s < bits.size() * 32; ++s) {
    const bool inside = s < model.size();
    const bool want = inside && model[s].live && testBit(allow.data(), allow.size(), model[s].row);
    CHECK_MSG(testBit(bits.data(), bits.size(), s) == want, "slot " << s);
    CHECK_MSG(testBit(liveOnly.data(), liveOnly.size(), s) == (inside && model[s].live), "slot " << s);
  }
}

}  // namespace

TEST_CASE("gpu_slots.match_a_plain_model_through_writes_and_compactions") {
  for (unsigned seed = 1; seed <= 20; ++seed) {
    std::mt19937 rng(seed);
    RowSlots state;
    std::vector<ModelSlot> model;
    size_t rows = 0;
    for (int step = 0; step < 60; ++step) {
      const unsigned op = rng() % 10;
      std::vector<uint32_t> liveSlots;
      for (size_t s = 0; s < model.size(); ++s) {
        if (model[s].live) liveSlots.push_back(static_cast<uint32_t>(s));
      }
      std::shuffle(liveSlots.begin(), liveSlots.end(), rng);
      if (op < 4 || model.empty()) {  // add or upsert
        const size_t count = 1 + rng() % 70;
        std::vector<uint32_t> replaced;
        if (op % 2 == 1) replaced.assign(liveSlots.begin(), liveSlots.begin() + std::min<size_t>(liveSlots.size(), rng() % (count + 1)));
        state = appendSlots(state, count, replaced);
        for (uint32_t s : replaced) model[s].live = false;
        for (size_t i = 0; i < count; ++i) model.push_back({static_cast<uint32_t>(rows + i), true});
        rows += count;
      } else if (op < 8) {  // remove
        std::vector<uint32_t> gone(liveSlots.begin(), liveSlots.begin() + std::min<size_t>(liveSlots.size(), rng() % 40));
        state = removeSlots(state, gone);
        for (uint32_t s : gone) model[s].live = false;
      } else {  // compact
        const Compaction plan = planCompaction(state);
        std::vector<ModelSlot> next;
        for (size_t s = 0; s < model.size(); ++s) {
          if (model[s].live) {
            CHECK(plan.newSlot[s] == next.size());
            CHECK(plan.kept[next.size()] == s);
            next.push_back(model[s]);
          } else {
            CHECK(plan.newSlot[s] == kNoSlot);
          }
        }
        CHECK(plan.kept.size() == next.size());
        CHECK(!plan.after.liveBits);
        state = plan.after;
        model = std::move(next);
      }
      checkAgainst(state, model, rows, rng);
    }
  }
}

TEST_CASE("gpu_slots.earlier_states_stay_as_they_were") {
  // A search holds the state it took: later writes must not change it.
  RowSlots a = appendSlots(RowSlots{}, 40);
  const RowSlots before = a;
  const RowSlots b = removeSlots(a, {3, 7});
  const RowSlots c = appendSlots(b, 5, {9});
  CHECK(!before.liveBits);
  CHECK(before.slotLive(3) && before.slotLive(9));
  CHECK(!b.slotLive(3) && b.slotLive(9));
  CHECK(!c.slotLive(9) && c.live == 40 - 3 + 5 - 0);
  const Compaction plan = planCompaction(c);
  CHECK(plan.after.slots == c.live);
  CHECK(!b.slotLive(7) && b.slots == 40);
}
