// Transformer::Forward and the K/V path shared by the forward and by rebuilds from residuals.
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
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
  const int64_t bt = block_tokens_;
  RSD_ASSIGN_OR_RETURN(w.rb_x, a.F32(bt, c.d_model, "rebuild scratch"));
  RSD_ASSIGN_OR_RETURN(w.rb_xn, a.F32(bt, c.d_model, "rebuild scratch"));
  RSD_ASSIGN_OR_RETURN(w.rb_k, a.F32(bt, kv_dim(), "rebuild scratch"));
  RSD_ASSIGN_OR_RETURN(w.rb_v, a.F32(bt, kv_dim(), "rebuild scratch"));
  RSD_ASSIGN_OR_RETURN(w.rb_pos, a.Ints(bt, "rebuild scratch"));
  RSD_ASSIGN_OR_RETURN(w.rb_ids, a.Ints(bt, "rebuild scratch"));
  RSD_ASSIGN_OR_RETURN(w.rb_slot_block, a.Ints(bt, "rebuild scratch"));
  RSD_ASSIGN_OR_RETURN(w.rb_slot_offset, a.Ints(bt, "rebuild scratch"));
  w.rb_rows = bt;
  return absl::OkStatus();
}

absl::Status Transformer::ProjectKv(const Layer& L, const Tensor& xn, const int32_t* pos_dev,
                                    Tensor k, Tensor v) {
  RSD_RETURN_IF_ERROR(backend_->MatMul(xn, L.wk, static_cast<const float*>(L.bk.data), k));
  RSD_RETURN_IF_ERROR(backend_->Rope(k, config_.n_kv_heads, config_.head_dim, pos_dev, rope_));
  return backend_->MatMul(xn, L.wv, static_cast<const float*>(L.bv.data), v);
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
    if (!in.evicted_chunks.empty()) {
      if (in.loader == nullptr || in.scratch_block < 0 || in.scratch_block >= pool.n_blocks) {
        return absl::InvalidArgumentError(absl::StrCat(
            "sequence ", s, ": evicted chunks need a loader and a scratch block"));
      }
      int32_t prev = -1;
      for (int32_t ch : in.evicted_chunks) {
        if (ch <= prev || (static_cast<int64_t>(ch) + 1) * block_tokens_ > in.start_pos) {
          return absl::InvalidArgumentError(absl::StrCat(
              "sequence ", s, ": evicted chunk ", ch, " is out of order, partial, or holds new "
              "tokens (start position ", in.start_pos, ")"));
        }
        prev = ch;
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
  RSD_RETURN_IF_ERROR(EnsureWorkspace(n));
  Workspace& w = *ws_;
  if (n_tables > w.tables_cap) {
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
  }

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

  const int64_t d = c.d_model;
  Tensor x = w.x.Rows(0, n), xn = w.xn.Rows(0, n), q = w.q.Rows(0, n), k = w.k.Rows(0, n),
         v = w.v.Rows(0, n), attn = w.attn.Rows(0, n), o = w.o.Rows(0, n),
         gate = w.gate.Rows(0, n), up = w.up.Rows(0, n), act = w.act.Rows(0, n);
  out->n_rows = n;
  if (capture_residuals) out->residuals.resize(static_cast<size_t>(c.n_layers * n * d));
  Backend& b = *backend_;
  RSD_RETURN_IF_ERROR(b.Embed(token_embd_, w.ids, x));
  for (int l = 0; l < c.n_layers; ++l) {
    const Layer& L = layers_[l];
    if (capture_residuals) {
      RSD_RETURN_IF_ERROR(b.CopyToHost(out->residuals.data() + static_cast<size_t>(l) * n * d,
                                       x.device(), x.bytes()));
    }
    RSD_RETURN_IF_ERROR(b.RmsNorm(x, L.attn_norm.f32(), c.rms_eps, xn));
    RSD_RETURN_IF_ERROR(b.MatMul(xn, L.wq, static_cast<const float*>(L.bq.data), q));
    RSD_RETURN_IF_ERROR(b.Rope(q, c.n_heads, c.head_dim, w.pos, rope_));
    RSD_RETURN_IF_ERROR(ProjectKv(L, xn, w.pos, k, v));
    RSD_RETURN_IF_ERROR(b.StoreKv(k, v, l, w.slot_block, w.slot_offset, pool));
    RSD_RETURN_IF_ERROR(AttendLayer(l, seqs, q, pool, attn));
    RSD_RETURN_IF_ERROR(b.MatMul(attn, L.wo, nullptr, o));
    RSD_RETURN_IF_ERROR(b.Add(x, o));
    RSD_RETURN_IF_ERROR(b.RmsNorm(x, L.ffn_norm.f32(), c.rms_eps, xn));
    RSD_RETURN_IF_ERROR(b.MatMul(xn, L.w_gate, nullptr, gate));
    RSD_RETURN_IF_ERROR(b.MatMul(xn, L.w_up, nullptr, up));
    RSD_RETURN_IF_ERROR(b.SiluMul(gate, up, act));
    RSD_RETURN_IF_ERROR(b.MatMul(act, L.w_down, nullptr, o));
    RSD_RETURN_IF_ERROR(b.Add(x, o));
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

absl::Status Transformer::AttendLayer(int layer, std::span<const SeqInput> seqs, const Tensor& q,
                                      const KvPoolView& pool, Tensor out) {
  const ModelConfig& c = config_;
  Workspace& w = *ws_;
  AttentionShape shape{c.n_heads, c.n_kv_heads, c.head_dim,
                       1.0f / std::sqrt(static_cast<float>(c.head_dim))};
  int max_chunks = 0;
  bool bounded = false;
  for (const SeqInput& in : seqs) {
    const int64_t end = in.start_pos + static_cast<int64_t>(in.tokens.size());
    shape.max_keys = std::max<int32_t>(shape.max_keys, static_cast<int32_t>(end));
    max_chunks = std::max<int>(max_chunks, static_cast<int>((end + block_tokens_ - 1) / block_tokens_));
    bounded = bounded || !in.evicted_chunks.empty() || !in.dropped_chunks.empty() ||
              in.attention_mass != nullptr;
  }
  Backend& b = *backend_;
  if (!bounded) return b.Attention(q, w.att_rows, layer, shape, pool, out);
  // Chunk-major: hot runs in one call; each evicted chunk is rebuilt into its sequence's scratch
  // block, the table entry pointed at it, and merged on its own. One scratch block per sequence.
  AttentionState st = w.att_state;
  bool want_mass = false;
  for (const SeqInput& in : seqs) want_mass = want_mass || in.attention_mass != nullptr;
  // Per-chunk statistics for the lossy baselines, freed on every path out.
  std::vector<DevicePtr<void>> stat_buffers;
  struct FreeAll {
    Backend* b;
    std::vector<DevicePtr<void>>* v;
    ~FreeAll() {
      for (DevicePtr<void> p : *v) b->Free(p);
    }
  } free_stats{backend_, &stat_buffers};
  if (want_mass) {
    const size_t n = static_cast<size_t>(q.rows) * c.n_heads * max_chunks;
    for (float** p : {&st.chunk_max, &st.chunk_sum}) {
      RSD_ASSIGN_OR_RETURN(DevicePtr<void> buf, b.Alloc(n * sizeof(float), "attention statistics"));
      stat_buffers.push_back(buf);
      *p = static_cast<float*>(buf.get());
      RSD_RETURN_IF_ERROR(b.Fill(buf, 0xFF, n * sizeof(float)));  // NaN: chunks never merged
    }
    st.chunk_stride = max_chunks;
  }
  RSD_RETURN_IF_ERROR(b.AttentionBegin(shape, q.rows, st));
  std::vector<size_t> cursor(seqs.size(), 0), dcursor(seqs.size(), 0);
  int run = 0;
  for (int ch = 0; ch < max_chunks; ++ch) {
    bool any_evicted = false, any_dropped = false;
    std::vector<bool> drops(seqs.size(), false);
    for (size_t s = 0; s < seqs.size(); ++s) {
      const auto& ev = seqs[s].evicted_chunks;
      if (cursor[s] < ev.size() && ev[cursor[s]] == ch) any_evicted = true;
      const auto& dr = seqs[s].dropped_chunks;
      while (dcursor[s] < dr.size() && dr[dcursor[s]] < ch) ++dcursor[s];
      if (dcursor[s] < dr.size() && dr[dcursor[s]] == ch) drops[s] = any_dropped = true;
    }
    if (!any_evicted && !any_dropped) continue;
    if (run < ch) {
      RSD_RETURN_IF_ERROR(b.AttentionChunks(q, w.att_rows, layer, run, ch, shape, pool, st));
    }
    for (size_t s = 0; s < seqs.size(); ++s) {
      const auto& ev = seqs[s].evicted_chunks;
      if (cursor[s] < ev.size() && ev[cursor[s]] == ch) {
        RSD_RETURN_IF_ERROR(RebuildChunk(layer, ch, seqs[s], pool));
        RSD_RETURN_IF_ERROR(b.CopyToDevice(DeviceMemory(w.tables) + table_offsets_[s] + ch,
                                           &seqs[s].scratch_block, 4));
        ++cursor[s];
      }
    }
    if (any_dropped) {
      // Rows of a sequence that dropped this chunk end before it for this one call (the kernel
      // skips chunks past a row's keys); the others merge it as usual.
      std::vector<AttentionRow> rows = host_rows_;
      for (size_t r = 0; r < rows.size(); ++r) {
        if (drops[row_seq_[r]]) rows[r].n_keys = 0;
      }
      RSD_RETURN_IF_ERROR(b.CopyToDevice(DeviceMemory(w.att_rows), rows.data(),
                                         rows.size() * sizeof(AttentionRow)));
    }
    RSD_RETURN_IF_ERROR(b.AttentionChunks(q, w.att_rows, layer, ch, ch + 1, shape, pool, st));
    if (any_dropped) {
      RSD_RETURN_IF_ERROR(b.CopyToDevice(DeviceMemory(w.att_rows), host_rows_.data(),
                                         host_rows_.size() * sizeof(AttentionRow)));
    }
    run = ch + 1;
  }
  if (run < max_chunks) {
    RSD_RETURN_IF_ERROR(b.AttentionChunks(q, w.att_rows, layer, run, max_chunks, shape, pool, st));
  }
  RSD_RETURN_IF_ERROR(b.AttentionFinish(shape, q.rows, st, out));
  if (want_mass) return AccumulateMass(seqs, st, q.rows, max_chunks);
  return absl::OkStatus();
}

absl::Status Transformer::AccumulateMass(std::span<const SeqInput> seqs, const AttentionState& st,
                                         int64_t n_rows, int max_chunks) {
  const int nh = config_.n_heads;
  const size_t items = static_cast<size_t>(n_rows) * nh;
  std::vector<float> m(items), l(items), cmax(items * max_chunks), csum(items * max_chunks);
  RSD_RETURN_IF_ERROR(backend_->CopyToHost(m.data(), DeviceMemory(st.m), items * sizeof(float)));
  RSD_RETURN_IF_ERROR(backend_->CopyToHost(l.data(), DeviceMemory(st.l), items * sizeof(float)));
  RSD_RETURN_IF_ERROR(
      backend_->CopyToHost(cmax.data(), DeviceMemory(st.chunk_max), cmax.size() * sizeof(float)));
  RSD_RETURN_IF_ERROR(
      backend_->CopyToHost(csum.data(), DeviceMemory(st.chunk_sum), csum.size() * sizeof(float)));
  // A sequence's rows are contiguous: the row's index among its sequence's new tokens.
  std::vector<int64_t> first_row(seqs.size(), -1);
  for (int64_t r = 0; r < n_rows; ++r) {
    if (first_row[row_seq_[r]] < 0) first_row[row_seq_[r]] = r;
  }
  for (int64_t r = 0; r < n_rows; ++r) {
    const SeqInput& in = seqs[row_seq_[r]];
    std::vector<double>* mass = in.attention_mass;
    if (mass == nullptr) continue;
    const int64_t new_tokens = static_cast<int64_t>(in.tokens.size());
    if (in.mass_window > 0 && r - first_row[row_seq_[r]] < new_tokens - in.mass_window) continue;
    if (static_cast<int>(mass->size()) < max_chunks) mass->resize(max_chunks, 0.0);
    for (int h = 0; h < nh; ++h) {
      const size_t it = static_cast<size_t>(r) * nh + h;
      for (int ch = 0; ch < max_chunks; ++ch) {
        const float mc = cmax[it * max_chunks + ch];
        if (mc != mc) continue;  // not merged (past the row's keys, or dropped)
        (*mass)[ch] += static_cast<double>(csum[it * max_chunks + ch]) *
                       std::exp(static_cast<double>(mc) - m[it]) / l[it];
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Transformer::RebuildChunk(int layer, int32_t chunk, const SeqInput& in,
                                       const KvPoolView& pool) {
  ChunkState cs;
  RSD_RETURN_IF_ERROR((*in.loader)(layer, chunk, &cs));
  return RebuildIntoBlock(layer, chunk, cs, in.scratch_block, pool);
}

absl::Status Transformer::RebuildIntoBlock(int layer, int32_t chunk, const ChunkState& cs,
                                           int32_t scratch, const KvPoolView& pool,
                                           TransferStaging* staging) {
  if (ws_->rows == 0) RSD_RETURN_IF_ERROR(EnsureWorkspace(1));
  Workspace& w = *ws_;
  const int bt = block_tokens_, kvd = kv_dim();
  const int64_t d = config_.d_model;
  if (layer < 0 || layer >= config_.n_layers || scratch < 0 || scratch >= pool.n_blocks) {
    return absl::InvalidArgumentError(absl::StrCat("rebuild of layer ", layer, " into block ",
                                                   scratch, " is out of range"));
  }
  Backend& b = *backend_;
  if (poison_rebuilds_) {
    RSD_RETURN_IF_ERROR(
        b.Fill(pool.K(scratch, layer), 0xFF, static_cast<size_t>(2) * bt * kvd * sizeof(float)));
  }
  if (cs.form == StateForm::kKv) {
    if (cs.k.size() != static_cast<size_t>(bt) * kvd || cs.v.size() != cs.k.size()) {
      return absl::DataLossError(absl::StrCat("K/V checkpoint of chunk ", chunk, " layer ", layer,
                                              " has ", cs.k.size(), " values, expected ", bt * kvd));
    }
    const size_t bytes = cs.k.size() * sizeof(float);
    if (staging != nullptr) {
      RSD_RETURN_IF_ERROR(staging->ToDevice(pool.K(scratch, layer), cs.k.data(), bytes));
      RSD_RETURN_IF_ERROR(staging->ToDevice(pool.V(scratch, layer), cs.v.data(), bytes));
    } else {
      RSD_RETURN_IF_ERROR(b.CopyToDevice(pool.K(scratch, layer), cs.k.data(), bytes));
      RSD_RETURN_IF_ERROR(b.CopyToDevice(pool.V(scratch, layer), cs.v.data(), bytes));
    }
    rebuilds_.from_kv++;
    return absl::OkStatus();
  }
  Tensor x = w.rb_x.Rows(0, bt), xn = w.rb_xn.Rows(0, bt), k = w.rb_k.Rows(0, bt),
         v = w.rb_v.Rows(0, bt);
  if (cs.form == StateForm::kTokens) {
    if (layer != 0 || cs.tokens.size() != static_cast<size_t>(bt)) {
      return absl::DataLossError(absl::StrCat("token checkpoint of chunk ", chunk,
                                              " cannot rebuild layer ", layer));
    }
    for (int32_t id : cs.tokens) {
      if (id < 0 || id >= config_.vocab_size) {
        return absl::DataLossError(absl::StrCat("token checkpoint of chunk ", chunk,
                                                " holds token id ", id));
      }
    }
    RSD_RETURN_IF_ERROR(b.CopyToDevice(DeviceMemory(w.rb_ids), cs.tokens.data(), bt * 4));
    RSD_RETURN_IF_ERROR(b.Embed(token_embd_, w.rb_ids, x));
    rebuilds_.from_tokens++;
  } else {
    if (cs.h.size() != static_cast<size_t>(bt * d)) {
      return absl::DataLossError(absl::StrCat("residual checkpoint of chunk ", chunk, " layer ",
                                              layer, " has ", cs.h.size(), " values, expected ",
                                              bt * d));
    }
    RSD_RETURN_IF_ERROR(b.CopyToDevice(x.device(), cs.h.data(), x.bytes()));
    rebuilds_.from_residual++;
  }
  std::vector<int32_t> pos(bt), blocks(bt, scratch), offs(bt);
  for (int i = 0; i < bt; ++i) {
    pos[i] = chunk * bt + i;
    offs[i] = i;
  }
  RSD_RETURN_IF_ERROR(b.CopyToDevice(DeviceMemory(w.rb_pos), pos.data(), bt * 4));
  RSD_RETURN_IF_ERROR(b.CopyToDevice(DeviceMemory(w.rb_slot_block), blocks.data(), bt * 4));
  RSD_RETURN_IF_ERROR(b.CopyToDevice(DeviceMemory(w.rb_slot_offset), offs.data(), bt * 4));
  RSD_RETURN_IF_ERROR(b.RmsNorm(x, layers_[layer].attn_norm.f32(), config_.rms_eps, xn));
  RSD_RETURN_IF_ERROR(ProjectKv(layers_[layer], xn, w.rb_pos, k, v));
  return b.StoreKv(k, v, layer, w.rb_slot_block, w.rb_slot_offset, pool);
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
  RSD_RETURN_IF_ERROR(EnsureWorkspace(n));
  Workspace& w = *ws_;
  Backend& b = *backend_;
  Tensor x = w.x.Rows(0, n), xn = w.xn.Rows(0, n), k = w.k.Rows(0, n), v = w.v.Rows(0, n);
  RSD_RETURN_IF_ERROR(b.CopyToDevice(x.device(), h.data(), x.bytes()));
  RSD_RETURN_IF_ERROR(b.CopyToDevice(DeviceMemory(w.pos), pos.data(), n * 4));
  RSD_RETURN_IF_ERROR(b.RmsNorm(x, layers_[layer].attn_norm.f32(), config_.rms_eps, xn));
  RSD_RETURN_IF_ERROR(ProjectKv(layers_[layer], xn, w.pos, k, v));
  RSD_RETURN_IF_ERROR(b.CopyToHost(k_out, k.device(), k.bytes()));
  return b.CopyToHost(v_out, v.device(), v.bytes());
}

}  // namespace rsd
