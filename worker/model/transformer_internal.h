// Private parts of Transformer shared by its source files.
#pragma once

#include <vector>

#include "kernels/backend.h"
#include "worker/model/transformer.h"

namespace rsd {

struct Transformer::Layer {
  Tensor attn_norm, ffn_norm;  // [d] f32 (rows = 1)
  Tensor wq, wk, wv, wo, w_gate, w_up, w_down;
  Tensor bq, bk, bv;  // [out] f32, data == nullptr when absent
};

// Per-call scratch in backend memory, grown to the largest batch seen.
struct Transformer::Workspace {
  int64_t rows = 0;
  Tensor x, xn, q, k, v, attn, o, gate, up, act, xg, logits;
  int32_t* ids = nullptr;
  int32_t* pos = nullptr;
  int32_t* slot_block = nullptr;
  int32_t* slot_offset = nullptr;
  AttentionRow* att_rows = nullptr;
  int32_t* tables = nullptr;
  // Rebuild scratch rows (Transformer::rebuild_chunks() chunks) and attention state.
  int64_t rb_rows = 0;
  Tensor rb_x, rb_xn, rb_k, rb_v;
  int32_t* rb_pos = nullptr;
  int32_t* rb_ids = nullptr;
  int32_t* rb_slot_block = nullptr;
  int32_t* rb_slot_offset = nullptr;
  AttentionState att_state;
  int64_t tables_cap = 0;
  std::vector<DevicePtr<void>> buffers;
};

}  // namespace rsd
