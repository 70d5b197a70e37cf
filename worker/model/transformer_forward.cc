// Transformer::Forward, its workspace, and the K/V path shared by the forward and by rebuilds from
// residuals. Attention over evicted or dropped chunks and the rebuilds are in
// transformer_attention.cc.
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/half.h"
#include "storage/common/status.h"
#include "worker/model/transformer.h"
#include "worker/model/transformer_internal.h"

namespace rsd {

namespace {
// Device scratch of one forward call, owned by `owned`.
class Allocator {
 public:
  Allocator(Backend* b, std::vector<DevicePtr<void>>& owned) : b_(b), owned_(owned) {}
  absl::StatusOr<Tensor> F32(int64_t rows, int64_t cols, const char* what) {
    RSD_ASSIGN_OR_RETURN(void* p, Raw(static_cast<size_t>(rows * cols) * sizeof(float), what));
    return Tensor{p, DType::kF32, rows, cols};
  }
  absl::StatusOr<int32_t*> Ints(int64_t n, const char* what) {
    RSD_ASSIGN_OR_RETURN(void* p, Raw(static_cast<size_t>(n) * sizeof(int32_t), what));
    return static_cast<int32_t*>(p);
  }
  absl::StatusOr<void*> Raw(size_t bytes, const char* what) {
    RSD_ASSIGN_OR_RETURN(DevicePtr<void> p, b_->Alloc(bytes, what));
    owned_.push_back(p);
    return p.get();  // kept raw in the workspace: an op argument, never read on the host
  }

 private:
  Backend* b_;
  std::vector<DevicePtr<void>>& owned_;
};
}  // namespace

absl::Status Transformer::EnsureWorkspace(int64_t rows) {
  Workspace& w = *ws_;
  if (rows <= w.rows) return absl::OkStatus();
  for (DevicePtr<void> p : w.buffers) backend_->Free(p);
  w.buffers.clear();
  w.rows = 0;  // until every buffer below is allocated
  w.tables_cap = 0;
  w.tables = nullptr;
  absl::Status st = AllocateWorkspace(rows);
  if (!st.ok()) {
    for (DevicePtr<void> p : w.buffers) backend_->Free(p);
    w.buffers.clear();
    return absl::Status(st.code(), absl::StrCat("workspace for ", rows, " rows: ", st.message()));
  }
  w.rows = rows;
  return absl::OkStatus();
}

absl::Status Transformer::AllocateWorkspace(int64_t rows) {
  Workspace& w = *ws_;
  const ModelConfig& c = config_;
  const int64_t qd = static_cast<int64_t>(c.n_heads) * c.head_dim;
  Allocator a(backend_, w.buffers);
  RSD_ASSIGN_OR_RETURN(w.x, a.F32(rows, c.d_model, "activations"));
  RSD_ASSIGN_OR_RETURN(w.xn, a.F32(rows, c.d_model, "activations"));
  RSD_ASSIGN_OR_RETURN(w.q, a.F32(rows, qd, "queries"));
  RSD_ASSIGN_OR_RETURN(w.k, a.F32(rows, kv_dim(), "keys"));
  RSD_ASSIGN_OR_RETURN(w.v, a.F32(rows, kv_dim(), "values"));
  RSD_ASSIGN_OR_RETURN(w.attn, a.F32(rows, qd, "attention output"));
  RSD_ASSIGN_OR_RETURN(w.o, a.F32(rows, c.d_model, "activations"));
  RSD_ASSIGN_OR_RETURN(w.gate, a.F32(rows, c.d_ff, "feed-forward activations"));
  RSD_ASSIGN_OR_RETURN(w.up, a.F32(rows, c.d_ff, "feed-forward activations"));
  RSD_ASSIGN_OR_RETURN(w.act, a.F32(rows, c.d_ff, "feed-forward activations"));
  RSD_ASSIGN_OR_RETURN(w.xg, a.F32(rows, c.d_model, "activations"));
  RSD_ASSIGN_OR_RETURN(w.logits, a.F32(rows, c.vocab_size, "logits"));
  RSD_ASSIGN_OR_RETURN(w.ids, a.Ints(rows, "token ids"));
  RSD_ASSIGN_OR_RETURN(w.pos, a.Ints(rows, "positions"));
  RSD_ASSIGN_OR_RETURN(w.slot_block, a.Ints(rows, "K/V slots"));
  RSD_ASSIGN_OR_RETURN(w.slot_offset, a.Ints(rows, "K/V slots"));
  RSD_ASSIGN_OR_RETURN(void* ar,
                       a.Raw(static_cast<size_t>(rows) * sizeof(AttentionRow), "attention rows"));
  w.att_rows = static_cast<AttentionRow*>(ar);
  const int64_t items = rows * c.n_heads;
  RSD_ASSIGN_OR_RETURN(Tensor m, a.F32(items, 1, "attention state"));
  RSD_ASSIGN_OR_RETURN(Tensor l, a.F32(items, 1, "attention state"));
  RSD_ASSIGN_OR_RETURN(Tensor acc, a.F32(items, c.head_dim, "attention state"));
  w.att_state = AttentionState{m.f32(), l.f32(), acc.f32()};
  const int64_t rb = static_cast<int64_t>(block_tokens_) * rebuild_chunks();
  RSD_ASSIGN_OR_RETURN(w.rb_x, a.F32(rb, c.d_model, "rebuild scratch"));
  RSD_ASSIGN_OR_RETURN(w.rb_xn, a.F32(rb, c.d_model, "rebuild scratch"));
  RSD_ASSIGN_OR_RETURN(w.rb_k, a.F32(rb, kv_dim(), "rebuild scratch"));
  RSD_ASSIGN_OR_RETURN(w.rb_v, a.F32(rb, kv_dim(), "rebuild scratch"));
  RSD_ASSIGN_OR_RETURN(w.rb_pos, a.Ints(rb, "rebuild scratch"));
  RSD_ASSIGN_OR_RETURN(w.rb_ids, a.Ints(rb, "rebuild scratch"));
  RSD_ASSIGN_OR_RETURN(w.rb_slot_block, a.Ints(rb, "rebuild scratch"));
  RSD_ASSIGN_OR_RETURN(w.rb_slot_offset, a.Ints(rb, "rebuild scratch"));
  w.rb_rows = rb;
  return absl::OkStatus();
}

absl::Status Transformer::ProjectKv(const Layer& L, const Tensor& xn, const int32_t* pos_dev,
                                    Tensor k, Tensor v, Tensor* q) {
  using Target = Backend::MatMulTarget;
  Target targets[3];
  int n = 0;
  if (q != nullptr) targets[n++] = Target{&L.wq, static_cast<const float*>(L.bq.data), *q};
  targets[n++] = Target{&L.wk, static_cast<const float*>(L.bk.data), k};
  targets[n++] = Target{&L.wv, static_cast<const float*>(L.bv.data), v};
  RSD_RETURN_IF_ERROR(backend_->MatMulShared(xn, std::span<const Target>(targets, n)));
  if (q != nullptr) {
    RSD_RETURN_IF_ERROR(backend_->Rope(*q, config_.n_heads, config_.head_dim, pos_dev, rope_));
  }
  return backend_->Rope(k, config_.n_kv_heads, config_.head_dim, pos_dev, rope_);
}

absl::Status Transformer::CheckSeq(size_t s, const SeqInput& in, const KvPoolView& pool) const {
  const int64_t end = static_cast<int64_t>(in.start_pos) + static_cast<int64_t>(in.tokens.size());
  if (in.tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("sequence ", s, ": no tokens"));
  }
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
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", s, ": block id ", in.block_table[b], " out of range"));
    }
  }
  if (!in.evicted_chunks.empty()) {
    if (in.loader == nullptr || in.scratch_block < 0 || in.scratch_block >= pool.n_blocks) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", s, ": evicted chunks need a loader and a scratch block"));
    }
    int32_t prev = -1;
    for (int32_t ch : in.evicted_chunks) {
      if (ch <= prev || (static_cast<int64_t>(ch) + 1) * block_tokens_ > in.start_pos) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", s, ": evicted chunk ", ch,
                                                       " is out of order, partial, or holds new "
                                                       "tokens (start position ",
                                                       in.start_pos, ")"));
      }
      prev = ch;
    }
  }
  for (int32_t id : in.tokens) {
    if (id < 0 || id >= config_.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " outside [0, ", config_.vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status Transformer::EnsureTables(int64_t n_tables) {
  Workspace& w = *ws_;
  if (n_tables <= w.tables_cap) return absl::OkStatus();
  if (w.tables != nullptr) {
    backend_->Free(DeviceMemory<void>(w.tables));
    std::erase_if(w.buffers, [&](DevicePtr<void> p) { return p.get() == w.tables; });
  }
  w.tables = nullptr;
  w.tables_cap = 0;
  RSD_ASSIGN_OR_RETURN(DevicePtr<void> t,
                       backend_->Alloc(static_cast<size_t>(n_tables) * 4, "block tables"));
  w.tables = static_cast<int32_t*>(t.get());
  w.buffers.push_back(t);
  w.tables_cap = n_tables;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> Transformer::UploadRows(std::span<const SeqInput> seqs,
                                                             int64_t n, ForwardResult* out) {
  Workspace& w = *ws_;
  // Host-side row metadata, then one copy of each array to the device.
  std::vector<int32_t> ids, pos, sblock, soff, tables;
  std::vector<AttentionRow> arows;
  std::vector<int64_t> logit_rows;
  out->logit_seq.clear();
  table_offsets_.clear();
  row_seq_.clear();
  for (size_t s = 0; s < seqs.size(); ++s) {
    const SeqInput& in = seqs[s];
    const int64_t end = in.start_pos + static_cast<int64_t>(in.tokens.size());
    const int64_t nb = (end + block_tokens_ - 1) / block_tokens_;
    table_offsets_.push_back(static_cast<int64_t>(tables.size()));
    const int32_t* table_dev = w.tables + tables.size();
    tables.insert(tables.end(), in.block_table.begin(), in.block_table.begin() + nb);
    for (size_t i = 0; i < in.tokens.size(); ++i) {
      const int32_t p = in.start_pos + static_cast<int32_t>(i);
      ids.push_back(in.tokens[i]);
      pos.push_back(p);
      sblock.push_back(in.block_table[p / block_tokens_]);
      soff.push_back(p % block_tokens_);
      arows.push_back(AttentionRow{table_dev, p + 1});
      row_seq_.push_back(static_cast<int32_t>(s));
      if (in.all_logits || i + 1 == in.tokens.size()) {
        logit_rows.push_back(static_cast<int64_t>(ids.size()) - 1);
        out->logit_seq.push_back(static_cast<int32_t>(s));
      }
    }
  }
  RSD_RETURN_IF_ERROR(backend_->CopyToDevice(DeviceMemory(w.ids), ids.data(), n * 4));
  RSD_RETURN_IF_ERROR(backend_->CopyToDevice(DeviceMemory(w.pos), pos.data(), n * 4));
  RSD_RETURN_IF_ERROR(backend_->CopyToDevice(DeviceMemory(w.slot_block), sblock.data(), n * 4));
  RSD_RETURN_IF_ERROR(backend_->CopyToDevice(DeviceMemory(w.slot_offset), soff.data(), n * 4));
  RSD_RETURN_IF_ERROR(
      backend_->CopyToDevice(DeviceMemory(w.tables), tables.data(), tables.size() * 4));
  RSD_RETURN_IF_ERROR(
      backend_->CopyToDevice(DeviceMemory(w.att_rows), arows.data(), n * sizeof(AttentionRow)));
  host_rows_ = arows;
  return logit_rows;
}

absl::Status Transformer::Forward(std::span<const SeqInput> seqs, const KvPoolView& pool,
                                  bool capture_residuals, ForwardResult* out) {
  const ModelConfig& c = config_;
  int64_t n = 0, n_tables = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const SeqInput& in = seqs[s];
    RSD_RETURN_IF_ERROR(CheckSeq(s, in, pool));
    const int64_t end = static_cast<int64_t>(in.start_pos) + static_cast<int64_t>(in.tokens.size());
    n += static_cast<int64_t>(in.tokens.size());
    n_tables += (end + block_tokens_ - 1) / block_tokens_;
  }
  if (n == 0) return absl::InvalidArgumentError("empty batch");
  RSD_RETURN_IF_ERROR(EnsureWorkspace(n));
  RSD_RETURN_IF_ERROR(EnsureTables(n_tables));
  RSD_ASSIGN_OR_RETURN(const std::vector<int64_t> logit_rows, UploadRows(seqs, n, out));

  Workspace& w = *ws_;
  const int64_t d = c.d_model;
  Tensor x = w.x.Rows(0, n);
  out->n_rows = n;
  // `out` may be a previous call's (its buffers reused): every field is set anew.
  if (capture_residuals) {
    out->residuals.resize(static_cast<size_t>(c.n_layers * n * d));
  } else {
    out->residuals.clear();
  }
  Backend& b = *backend_;
  RSD_RETURN_IF_ERROR(b.Embed(token_embd_, w.ids, x));
  for (int l = 0; l < c.n_layers; ++l) {
    if (capture_residuals) {
      RSD_RETURN_IF_ERROR(b.CopyToHost(out->residuals.data() + static_cast<size_t>(l) * n * d,
                                       x.device(), x.bytes()));
    }
    RSD_RETURN_IF_ERROR(ForwardLayer(l, seqs, pool, n));
  }

  const int64_t nl = static_cast<int64_t>(logit_rows.size());
  Tensor xg = w.xg.Rows(0, nl), logits = w.logits.Rows(0, nl);
  for (int64_t i = 0; i < nl; ++i) {
    RSD_RETURN_IF_ERROR(b.CopyOnDevice(xg.Rows(i, 1).device(), x.Rows(logit_rows[i], 1).device(),
                                       d * sizeof(float)));
  }
  RSD_RETURN_IF_ERROR(b.RmsNorm(xg, output_norm_.f32(), c.rms_eps, xg));
  RSD_RETURN_IF_ERROR(b.MatMul(xg, output_, nullptr, logits));
  out->logits.resize(static_cast<size_t>(nl * c.vocab_size));
  return b.CopyToHost(out->logits.data(), logits.device(), logits.bytes());
}

absl::Status Transformer::ForwardLayer(int l, std::span<const SeqInput> seqs,
                                       const KvPoolView& pool, int64_t n) {
  const ModelConfig& c = config_;
  Workspace& w = *ws_;
  Tensor x = w.x.Rows(0, n), xn = w.xn.Rows(0, n), q = w.q.Rows(0, n), k = w.k.Rows(0, n),
         v = w.v.Rows(0, n), attn = w.attn.Rows(0, n), o = w.o.Rows(0, n), gate = w.gate.Rows(0, n),
         up = w.up.Rows(0, n), act = w.act.Rows(0, n);
  Backend& b = *backend_;
  const Layer& L = layers_[l];
  RSD_RETURN_IF_ERROR(b.RmsNorm(x, L.attn_norm.f32(), c.rms_eps, xn));
  RSD_RETURN_IF_ERROR(ProjectKv(L, xn, w.pos, k, v, &q));
  RSD_RETURN_IF_ERROR(b.StoreKv(k, v, l, w.slot_block, w.slot_offset, pool));
  RSD_RETURN_IF_ERROR(AttendLayer(l, seqs, q, pool, attn));
  RSD_RETURN_IF_ERROR(b.MatMul(attn, L.wo, nullptr, o));
  RSD_RETURN_IF_ERROR(b.Add(x, o));
  RSD_RETURN_IF_ERROR(b.RmsNorm(x, L.ffn_norm.f32(), c.rms_eps, xn));
  const Backend::MatMulTarget gate_up[] = {{&L.w_gate, nullptr, gate}, {&L.w_up, nullptr, up}};
  RSD_RETURN_IF_ERROR(b.MatMulShared(xn, gate_up));
  RSD_RETURN_IF_ERROR(b.SiluMul(gate, up, act));
  RSD_RETURN_IF_ERROR(b.MatMul(act, L.w_down, nullptr, o));
  return b.Add(x, o);
}

absl::Status Transformer::KvFromResidual(int layer, std::span<const float> h,
                                         std::span<const int32_t> pos, KvElement* k_out,
                                         KvElement* v_out) {
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
  RSD_RETURN_IF_ERROR(EnsureWorkspace(n));
  Workspace& w = *ws_;
  Backend& b = *backend_;
  Tensor x = w.x.Rows(0, n), xn = w.xn.Rows(0, n), k = w.k.Rows(0, n), v = w.v.Rows(0, n);
  RSD_RETURN_IF_ERROR(b.CopyToDevice(x.device(), h.data(), x.bytes()));
  RSD_RETURN_IF_ERROR(b.CopyToDevice(DeviceMemory(w.pos), pos.data(), n * 4));
  RSD_RETURN_IF_ERROR(b.RmsNorm(x, layers_[layer].attn_norm.f32(), config_.rms_eps, xn));
  RSD_RETURN_IF_ERROR(ProjectKv(layers_[layer], xn, w.pos, k, v));
  std::vector<float> kf(static_cast<size_t>(n) * kv_dim()), vf(kf.size());
  RSD_RETURN_IF_ERROR(b.CopyToHost(kf.data(), k.device(), k.bytes()));
  RSD_RETURN_IF_ERROR(b.CopyToHost(vf.data(), v.device(), v.bytes()));
  for (size_t i = 0; i < kf.size(); ++i) {  // the pool's rounding (StoreKv)
    k_out[i] = half::F32ToF16(kf[i]);
    v_out[i] = half::F32ToF16(vf[i]);
  }
  return absl::OkStatus();
}

}  // namespace rsd
