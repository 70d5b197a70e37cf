// Transformer::Forward and the K/V path shared by the forward and by rebuilds from residuals.
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "storage/common/status.h"
#include "worker/model/transformer.h"
#include "worker/model/transformer_internal.h"

namespace rsd {

namespace {
Tensor MakeTensor(Backend* b, std::vector<void*>& owned, int64_t rows, int64_t cols) {
  void* p = b->Alloc(static_cast<size_t>(rows * cols) * sizeof(float));
  RSD_CHECK(p != nullptr);
  owned.push_back(p);
  return Tensor{p, DType::kF32, rows, cols};
}
}  // namespace

void Transformer::EnsureWorkspace(int64_t rows) {
  Workspace& w = *ws_;
  if (rows <= w.rows) return;
  for (void* p : w.buffers) backend_->Free(p);
  w.buffers.clear();
  const ModelConfig& c = config_;
  const int64_t qd = static_cast<int64_t>(c.n_heads) * c.head_dim;
  auto& o = w.buffers;
  w.x = MakeTensor(backend_, o, rows, c.d_model);
  w.xn = MakeTensor(backend_, o, rows, c.d_model);
  w.q = MakeTensor(backend_, o, rows, qd);
  w.k = MakeTensor(backend_, o, rows, kv_dim());
  w.v = MakeTensor(backend_, o, rows, kv_dim());
  w.attn = MakeTensor(backend_, o, rows, qd);
  w.o = MakeTensor(backend_, o, rows, c.d_model);
  w.gate = MakeTensor(backend_, o, rows, c.d_ff);
  w.up = MakeTensor(backend_, o, rows, c.d_ff);
  w.act = MakeTensor(backend_, o, rows, c.d_ff);
  w.xg = MakeTensor(backend_, o, rows, c.d_model);
  w.logits = MakeTensor(backend_, o, rows, c.vocab_size);
  auto ints = [&](int64_t n) {
    void* p = backend_->Alloc(static_cast<size_t>(n) * sizeof(int32_t));
    RSD_CHECK(p != nullptr);
    o.push_back(p);
    return static_cast<int32_t*>(p);
  };
  w.ids = ints(rows);
  w.pos = ints(rows);
  w.slot_block = ints(rows);
  w.slot_offset = ints(rows);
  void* ar = backend_->Alloc(static_cast<size_t>(rows) * sizeof(AttentionRow));
  RSD_CHECK(ar != nullptr);
  o.push_back(ar);
  w.att_rows = static_cast<AttentionRow*>(ar);
  w.tables_cap = 0;
  w.tables = nullptr;
  w.rows = rows;
}

void Transformer::ProjectKv(const Layer& L, const Tensor& xn, const int32_t* pos_dev, Tensor k,
                            Tensor v) {
  backend_->MatMul(xn, L.wk, static_cast<const float*>(L.bk.data), k);
  backend_->Rope(k, config_.n_kv_heads, config_.head_dim, pos_dev, rope_);
  backend_->MatMul(xn, L.wv, static_cast<const float*>(L.bv.data), v);
}

absl::Status Transformer::Forward(std::span<const SeqInput> seqs, const KvPoolView& pool,
                                  bool capture_residuals, ForwardResult* out) {
  const ModelConfig& c = config_;
  int64_t n = 0, n_tables = 0, n_logits = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const SeqInput& in = seqs[s];
    const int64_t end = static_cast<int64_t>(in.start_pos) + static_cast<int64_t>(in.tokens.size());
    if (in.tokens.empty()) return absl::InvalidArgumentError(absl::StrCat("sequence ", s, ": no tokens"));
    if (in.start_pos < 0 || end > max_context_) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s, ": positions ", in.start_pos,
                                                     "..", end - 1, " exceed the context of ",
                                                     max_context_));
    }
    const int64_t need_blocks = (end + block_tokens_ - 1) / block_tokens_;
    if (static_cast<int64_t>(in.block_table.size()) < need_blocks) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s, ": block table has ",
                                                     in.block_table.size(), " blocks, needs ",
                                                     need_blocks));
    }
    for (int64_t b = 0; b < need_blocks; ++b) {
      if (in.block_table[b] < 0 || in.block_table[b] >= pool.n_blocks) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", s, ": block id ",
                                                       in.block_table[b], " out of range"));
      }
    }
    for (int32_t id : in.tokens) {
      if (id < 0 || id >= c.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("token id ", id, " outside [0, ",
                                                       c.vocab_size, ")"));
      }
    }
    n += static_cast<int64_t>(in.tokens.size());
    n_tables += need_blocks;
    n_logits += in.all_logits ? static_cast<int64_t>(in.tokens.size()) : 1;
  }
  if (n == 0) return absl::InvalidArgumentError("empty batch");
  EnsureWorkspace(n);
  Workspace& w = *ws_;
  if (n_tables > w.tables_cap) {
    if (w.tables != nullptr) backend_->Free(w.tables);
    std::erase(w.buffers, static_cast<void*>(w.tables));
    w.tables = static_cast<int32_t*>(backend_->Alloc(static_cast<size_t>(n_tables) * 4));
    RSD_CHECK(w.tables != nullptr);
    w.buffers.push_back(w.tables);
    w.tables_cap = n_tables;
  }

  // Host-side row metadata, then one copy of each array to the device.
  std::vector<int32_t> ids, pos, sblock, soff, tables;
  std::vector<AttentionRow> arows;
  std::vector<int64_t> logit_rows;
  out->logit_seq.clear();
  for (size_t s = 0; s < seqs.size(); ++s) {
    const SeqInput& in = seqs[s];
    const int64_t end = in.start_pos + static_cast<int64_t>(in.tokens.size());
    const int64_t nb = (end + block_tokens_ - 1) / block_tokens_;
    const int32_t* table_dev = w.tables + tables.size();
    tables.insert(tables.end(), in.block_table.begin(), in.block_table.begin() + nb);
    for (size_t i = 0; i < in.tokens.size(); ++i) {
      const int32_t p = in.start_pos + static_cast<int32_t>(i);
      ids.push_back(in.tokens[i]);
      pos.push_back(p);
      sblock.push_back(in.block_table[p / block_tokens_]);
      soff.push_back(p % block_tokens_);
      arows.push_back(AttentionRow{table_dev, p + 1});
      if (in.all_logits || i + 1 == in.tokens.size()) {
        logit_rows.push_back(static_cast<int64_t>(ids.size()) - 1);
        out->logit_seq.push_back(static_cast<int32_t>(s));
      }
    }
  }
  backend_->CopyToDevice(w.ids, ids.data(), n * 4);
  backend_->CopyToDevice(w.pos, pos.data(), n * 4);
  backend_->CopyToDevice(w.slot_block, sblock.data(), n * 4);
  backend_->CopyToDevice(w.slot_offset, soff.data(), n * 4);
  backend_->CopyToDevice(w.tables, tables.data(), tables.size() * 4);
  backend_->CopyToDevice(w.att_rows, arows.data(), n * sizeof(AttentionRow));

  const int64_t d = c.d_model;
  Tensor x = w.x.Rows(0, n), xn = w.xn.Rows(0, n), q = w.q.Rows(0, n), k = w.k.Rows(0, n),
         v = w.v.Rows(0, n), attn = w.attn.Rows(0, n), o = w.o.Rows(0, n),
         gate = w.gate.Rows(0, n), up = w.up.Rows(0, n), act = w.act.Rows(0, n);
  out->n_rows = n;
  if (capture_residuals) out->residuals.resize(static_cast<size_t>(c.n_layers * n * d));
  const AttentionShape shape{c.n_heads, c.n_kv_heads, c.head_dim,
                             1.0f / std::sqrt(static_cast<float>(c.head_dim))};

  backend_->Embed(token_embd_, w.ids, x);
  for (int l = 0; l < c.n_layers; ++l) {
    const Layer& L = layers_[l];
    if (capture_residuals) {
      backend_->CopyToHost(out->residuals.data() + static_cast<size_t>(l) * n * d, x.data,
                           x.bytes());
    }
    backend_->RmsNorm(x, L.attn_norm.f32(), c.rms_eps, xn);
    backend_->MatMul(xn, L.wq, static_cast<const float*>(L.bq.data), q);
    backend_->Rope(q, c.n_heads, c.head_dim, w.pos, rope_);
    ProjectKv(L, xn, w.pos, k, v);
    backend_->StoreKv(k, v, l, w.slot_block, w.slot_offset, pool);
    backend_->Attention(q, w.att_rows, l, shape, pool, attn);
    backend_->MatMul(attn, L.wo, nullptr, o);
    backend_->Add(x, o);
    backend_->RmsNorm(x, L.ffn_norm.f32(), c.rms_eps, xn);
    backend_->MatMul(xn, L.w_gate, nullptr, gate);
    backend_->MatMul(xn, L.w_up, nullptr, up);
    backend_->SiluMul(gate, up, act);
    backend_->MatMul(act, L.w_down, nullptr, o);
    backend_->Add(x, o);
  }

  const int64_t nl = static_cast<int64_t>(logit_rows.size());
  Tensor xg = w.xg.Rows(0, nl), logits = w.logits.Rows(0, nl);
  for (int64_t i = 0; i < nl; ++i) {
    backend_->CopyOnDevice(xg.Rows(i, 1).data, x.Rows(logit_rows[i], 1).data, d * sizeof(float));
  }
  backend_->RmsNorm(xg, output_norm_.f32(), c.rms_eps, xg);
  backend_->MatMul(xg, output_, nullptr, logits);
  out->logits.resize(static_cast<size_t>(nl * c.vocab_size));
  backend_->CopyToHost(out->logits.data(), logits.data, logits.bytes());
  backend_->Synchronize();
  return absl::OkStatus();
}

absl::Status Transformer::KvFromResidual(int layer, std::span<const float> h,
                                         std::span<const int32_t> pos, float* k_out,
                                         float* v_out) {
  const int64_t d = config_.d_model;
  const int64_t n = static_cast<int64_t>(pos.size());
  if (layer < 0 || layer >= config_.n_layers) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " out of range"));
  }
  if (static_cast<int64_t>(h.size()) != n * d) {
    return absl::InvalidArgumentError(absl::StrCat("residual has ", h.size(), " values, expected ",
                                                   n * d));
  }
  for (int32_t p : pos) {
    if (p < 0 || p >= max_context_) {
      return absl::InvalidArgumentError(absl::StrCat("position ", p, " out of range"));
    }
  }
  if (n == 0) return absl::OkStatus();
  EnsureWorkspace(n);
  Workspace& w = *ws_;
  Tensor x = w.x.Rows(0, n), xn = w.xn.Rows(0, n), k = w.k.Rows(0, n), v = w.v.Rows(0, n);
  backend_->CopyToDevice(x.data, h.data(), x.bytes());
  backend_->CopyToDevice(w.pos, pos.data(), n * 4);
  backend_->RmsNorm(x, layers_[layer].attn_norm.f32(), config_.rms_eps, xn);
  ProjectKv(layers_[layer], xn, w.pos, k, v);
  backend_->CopyToHost(k_out, k.data, k.bytes());
  backend_->CopyToHost(v_out, v.data, v.bytes());
  backend_->Synchronize();
  return absl::OkStatus();
}

}  // namespace rsd
