// Transformer attention when a sequence's K/V is not all in the pool: evicted chunks rebuilt into a
// scratch block just before they are needed, dropped chunks skipped, per-chunk softmax mass for the
// lossy baselines; and RebuildIntoBlock, the one rebuild path (DESIGN.md sections 1, 4).
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "storage/common/status.h"
#include "worker/model/transformer.h"
#include "worker/model/transformer_internal.h"

namespace rsd {

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
    max_chunks =
        std::max<int>(max_chunks, static_cast<int>((end + block_tokens_ - 1) / block_tokens_));
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
  RSD_RETURN_IF_ERROR(AttendChunks(layer, seqs, q, pool, shape, max_chunks, st));
  RSD_RETURN_IF_ERROR(b.AttentionFinish(shape, q.rows, st, out));
  if (want_mass) return AccumulateMass(seqs, st, q.rows, max_chunks);
  return absl::OkStatus();
}

absl::Status Transformer::AttendChunks(int layer, std::span<const SeqInput> seqs, const Tensor& q,
                                       const KvPoolView& pool, const AttentionShape& shape,
                                       int max_chunks, const AttentionState& st) {
  Workspace& w = *ws_;
  Backend& b = *backend_;
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

absl::Status Transformer::CopyKvCheckpoint(int layer, int32_t chunk, const ChunkState& cs,
                                           int32_t scratch, const KvPoolView& pool,
                                           TransferStaging* staging) {
  const int bt = block_tokens_, kvd = kv_dim();
  Backend& b = *backend_;
  if (cs.k.size() != static_cast<size_t>(bt) * kvd || cs.v.size() != cs.k.size()) {
    return absl::DataLossError(absl::StrCat("K/V checkpoint of chunk ", chunk, " layer ", layer,
                                            " has ", cs.k.size(), " values, expected ", bt * kvd));
  }
  const size_t bytes = cs.k.size() * kKvElementBytes;
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

absl::Status Transformer::RebuildIntoBlock(int layer, int32_t chunk, const ChunkState& cs,
                                           int32_t block, const KvPoolView& pool,
                                           TransferStaging* staging) {
  const ChunkState* state = &cs;
  return RebuildIntoBlocks(layer, std::span<const int32_t>(&chunk, 1),
                           std::span<const ChunkState* const>(&state, 1),
                           std::span<const int32_t>(&block, 1), pool, staging);
}

// Chunk j's rows of the rebuild input x (residuals, or for layer 0 the token embeddings through
// rb_ids) at rows [j * bt, (j + 1) * bt); DATA_LOSS if its state cannot rebuild this layer.
absl::Status Transformer::LoadRebuildRows(int layer, int32_t chunk, const ChunkState& cs, int j,
                                          Tensor x) {
  const int bt = block_tokens_;
  const int64_t d = config_.d_model;
  Backend& b = *backend_;
  if (cs.form == StateForm::kTokens) {
    if (layer != 0 || cs.tokens.size() != static_cast<size_t>(bt)) {
      return absl::DataLossError(
          absl::StrCat("token checkpoint of chunk ", chunk, " cannot rebuild layer ", layer));
    }
    for (int32_t id : cs.tokens) {
      if (id < 0 || id >= config_.vocab_size) {
        return absl::DataLossError(
            absl::StrCat("token checkpoint of chunk ", chunk, " holds token id ", id));
      }
    }
    int32_t* ids = ws_->rb_ids + static_cast<int64_t>(j) * bt;
    RSD_RETURN_IF_ERROR(b.CopyToDevice(DeviceMemory(ids), cs.tokens.data(), bt * 4));
    RSD_RETURN_IF_ERROR(b.Embed(token_embd_, ids, x.Rows(j * bt, bt)));
    rebuilds_.from_tokens++;
    return absl::OkStatus();
  }
  if (cs.h.size() != static_cast<size_t>(bt * d)) {
    return absl::DataLossError(absl::StrCat("residual checkpoint of chunk ", chunk, " layer ",
                                            layer, " has ", cs.h.size(), " values, expected ",
                                            bt * d));
  }
  RSD_RETURN_IF_ERROR(
      b.CopyToDevice(x.Rows(j * bt, bt).device(), cs.h.data(), bt * d * sizeof(float)));
  rebuilds_.from_residual++;
  return absl::OkStatus();
}

absl::Status Transformer::RebuildIntoBlocks(int layer, std::span<const int32_t> chunks,
                                            std::span<const ChunkState* const> states,
                                            std::span<const int32_t> blocks, const KvPoolView& pool,
                                            TransferStaging* staging) {
  if (ws_->rows == 0) RSD_RETURN_IF_ERROR(EnsureWorkspace(1));
  Workspace& w = *ws_;
  const int bt = block_tokens_;
  if (chunks.size() != states.size() || chunks.size() != blocks.size() ||
      static_cast<int64_t>(chunks.size()) * bt > w.rb_rows) {
    return absl::InvalidArgumentError(absl::StrCat("rebuild of ", chunks.size(), " chunks (",
                                                   states.size(), " states, ", blocks.size(),
                                                   " blocks); at most ", w.rb_rows / bt));
  }
  Backend& b = *backend_;
  std::vector<int32_t> pos, slot_block, slot_offset;
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (layer < 0 || layer >= config_.n_layers || blocks[i] < 0 || blocks[i] >= pool.n_blocks) {
      return absl::InvalidArgumentError(
          absl::StrCat("rebuild of layer ", layer, " into block ", blocks[i], " is out of range"));
    }
    if (poison_rebuilds_) {
      RSD_RETURN_IF_ERROR(
          b.Fill(pool.K(blocks[i], layer), 0xFF, pool.layer_elements() * kKvElementBytes));
    }
    if (states[i]->form == StateForm::kKv) {
      RSD_RETURN_IF_ERROR(CopyKvCheckpoint(layer, chunks[i], *states[i], blocks[i], pool, staging));
      continue;
    }
    const int j = static_cast<int>(pos.size()) / bt;
    RSD_RETURN_IF_ERROR(LoadRebuildRows(layer, chunks[i], *states[i], j, w.rb_x));
    for (int t = 0; t < bt; ++t) {
      pos.push_back(chunks[i] * bt + t);
      slot_block.push_back(blocks[i]);
      slot_offset.push_back(t);
    }
  }
  if (pos.empty()) return absl::OkStatus();
  const int64_t n = static_cast<int64_t>(pos.size());
  Tensor x = w.rb_x.Rows(0, n), xn = w.rb_xn.Rows(0, n), k = w.rb_k.Rows(0, n),
         v = w.rb_v.Rows(0, n);
  RSD_RETURN_IF_ERROR(b.CopyToDevice(DeviceMemory(w.rb_pos), pos.data(), n * 4));
  RSD_RETURN_IF_ERROR(b.CopyToDevice(DeviceMemory(w.rb_slot_block), slot_block.data(), n * 4));
  RSD_RETURN_IF_ERROR(b.CopyToDevice(DeviceMemory(w.rb_slot_offset), slot_offset.data(), n * 4));
  RSD_RETURN_IF_ERROR(b.RmsNorm(x, layers_[layer].attn_norm.f32(), config_.rms_eps, xn));
  RSD_RETURN_IF_ERROR(ProjectKv(layers_[layer], xn, w.rb_pos, k, v));
  return b.StoreKv(k, v, layer, w.rb_slot_block, w.rb_slot_offset, pool);
}

}  // namespace rsd
