#include "worker/model/transformer.h"
#include "worker/model/transformer_internal.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "storage/common/hash.h"
#include "storage/common/status.h"

namespace rsd {

namespace {

std::vector<float> ToF32(const TensorView& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) {
    uint16_t h;
    switch (t.dtype) {
      case DType::kF32:
        std::memcpy(&out[i], t.data + 4 * i, 4);
        break;
      case DType::kF16:
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = F16ToF32(h);
        break;
      case DType::kBF16:
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = BF16ToF32(h);
        break;
      case DType::kQ8_0:
      case DType::kQ4_0:
      case DType::kQ4_1:
        out[i] = NAN;  // loaders refuse quantized vectors
        break;
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Transformer>> Transformer::Create(const ModelFile& file,
                                                                 Backend* backend,
                                                                 const TransformerOptions& opt) {
  std::unique_ptr<Transformer> t(new Transformer());
  t->backend_ = backend;
  t->config_ = file.config;
  const ModelConfig& c = t->config_;
  if (c.rope_dim != 0 && c.rope_dim != c.head_dim) {
    return absl::UnimplementedError(absl::StrCat(file.path, ": partial RoPE (rope_dim ",
                                                 c.rope_dim, " < head_dim ", c.head_dim,
                                                 ") is not supported"));
  }
  t->max_context_ = opt.max_context > 0 ? std::min(opt.max_context, c.context_length)
                                        : c.context_length;
  if (t->max_context_ <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(file.path, ": context length is 0"));
  }
  if (opt.block_tokens <= 0 || opt.block_tokens > 1024) {
    return absl::InvalidArgumentError(absl::StrCat("block_tokens ", opt.block_tokens,
                                                   " is outside [1, 1024]"));
  }
  t->block_tokens_ = opt.block_tokens;
  t->ws_ = std::make_unique<Workspace>();
  RSD_RETURN_IF_ERROR(t->Upload(file));
  RSD_RETURN_IF_ERROR(t->BuildRopeTable(file));
  return t;
}

Transformer::~Transformer() {
  if (ws_) {
    for (DevicePtr<void> p : ws_->buffers) backend_->Free(p);
  }
  for (DevicePtr<void> p : allocations_) backend_->Free(p);
}

absl::Status Transformer::Upload(const ModelFile& file) {
  auto upload = [&](const std::string& name, bool vector, Tensor* out) -> absl::Status {
    const TensorView* tv = file.Find(name);
    if (tv == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(file.path, ": missing tensor ", name));
    }
    std::vector<float> conv;
    const void* src = tv->data;
    size_t nbytes = tv->nbytes;
    Tensor t{nullptr, tv->dtype, tv->rows(), tv->cols()};
    if (vector) {
      conv = ToF32(*tv);
      src = conv.data();
      nbytes = conv.size() * sizeof(float);
      t = Tensor{nullptr, DType::kF32, 1, tv->numel()};
    }
    RSD_ASSIGN_OR_RETURN(DevicePtr<void> p, backend_->Alloc(nbytes, name));
    allocations_.push_back(p);
    weight_bytes_ += nbytes;
    t.data = p.get();
    if (vector) {
      RSD_RETURN_IF_ERROR(backend_->CopyToDevice(p, src, nbytes));
    } else {
      RSD_RETURN_IF_ERROR(backend_->UploadWeight(src, &t));
    }
    *out = t;
    return absl::OkStatus();
  };
  RSD_RETURN_IF_ERROR(upload("token_embd.weight", false, &token_embd_));
  RSD_RETURN_IF_ERROR(upload("output_norm.weight", true, &output_norm_));
  if (config_.tied_embeddings) {
    output_ = token_embd_;
  } else {
    RSD_RETURN_IF_ERROR(upload("output.weight", false, &output_));
  }
  layers_.resize(config_.n_layers);
  for (int l = 0; l < config_.n_layers; ++l) {
    Layer& L = layers_[l];
    const std::string p = absl::StrCat("blk.", l, ".");
    RSD_RETURN_IF_ERROR(upload(p + "attn_norm.weight", true, &L.attn_norm));
    RSD_RETURN_IF_ERROR(upload(p + "ffn_norm.weight", true, &L.ffn_norm));
    RSD_RETURN_IF_ERROR(upload(p + "attn_q.weight", false, &L.wq));
    RSD_RETURN_IF_ERROR(upload(p + "attn_k.weight", false, &L.wk));
    RSD_RETURN_IF_ERROR(upload(p + "attn_v.weight", false, &L.wv));
    RSD_RETURN_IF_ERROR(upload(p + "attn_output.weight", false, &L.wo));
    RSD_RETURN_IF_ERROR(upload(p + "ffn_gate.weight", false, &L.w_gate));
    RSD_RETURN_IF_ERROR(upload(p + "ffn_up.weight", false, &L.w_up));
    RSD_RETURN_IF_ERROR(upload(p + "ffn_down.weight", false, &L.w_down));
    if (config_.qkv_bias) {
      RSD_RETURN_IF_ERROR(upload(p + "attn_q.bias", true, &L.bq));
      RSD_RETURN_IF_ERROR(upload(p + "attn_k.bias", true, &L.bk));
      RSD_RETURN_IF_ERROR(upload(p + "attn_v.bias", true, &L.bv));
    }
  }
  return absl::OkStatus();
}

absl::Status Transformer::BuildRopeTable(const ModelFile& file) {
  const int half = config_.head_dim / 2;
  std::vector<double> inv_freq(half);
  for (int i = 0; i < half; ++i) {
    inv_freq[i] = std::pow(static_cast<double>(config_.rope_theta), -2.0 * i / config_.head_dim);
  }
  if (const TensorView* f = file.Find("rope_freqs.weight")) {
    std::vector<float> factors = ToF32(*f);
    if (static_cast<int>(factors.size()) != half) {
      return absl::InvalidArgumentError(absl::StrCat(file.path, ": rope_freqs has ",
                                                     factors.size(), " values, expected ", half));
    }
    for (int i = 0; i < half; ++i) inv_freq[i] /= factors[i];
  } else if (config_.rope_scaling == RopeScaling::kLlama3) {
    const double factor = config_.rope_scale_factor, lo = config_.rope_low_freq_factor,
                 hi = config_.rope_high_freq_factor, orig = config_.rope_original_context;
    for (int i = 0; i < half; ++i) {
      const double wavelen = 2.0 * M_PI / inv_freq[i];
      if (wavelen > orig / lo) {
        inv_freq[i] /= factor;
      } else if (wavelen >= orig / hi) {
        const double smooth = (orig / wavelen - lo) / (hi - lo);
        inv_freq[i] = (1.0 - smooth) * inv_freq[i] / factor + smooth * inv_freq[i];
      }
    }
  }
  const double pos_scale =
      config_.rope_scaling == RopeScaling::kLinear ? 1.0 / config_.rope_scale_factor : 1.0;
  const size_t n = static_cast<size_t>(max_context_) * half;
  std::vector<float> cos_t(n), sin_t(n);
  for (int p = 0; p < max_context_; ++p) {
    for (int i = 0; i < half; ++i) {
      const double angle = p * pos_scale * inv_freq[i];
      cos_t[static_cast<size_t>(p) * half + i] = static_cast<float>(std::cos(angle));
      sin_t[static_cast<size_t>(p) * half + i] = static_cast<float>(std::sin(angle));
    }
  }
  RSD_ASSIGN_OR_RETURN(DevicePtr<void> dc, backend_->Alloc(n * sizeof(float), "RoPE table"));
  allocations_.push_back(dc);
  RSD_ASSIGN_OR_RETURN(DevicePtr<void> ds, backend_->Alloc(n * sizeof(float), "RoPE table"));
  allocations_.push_back(ds);
  RSD_RETURN_IF_ERROR(backend_->CopyToDevice(dc, cos_t.data(), n * sizeof(float)));
  RSD_RETURN_IF_ERROR(backend_->CopyToDevice(ds, sin_t.data(), n * sizeof(float)));
  rope_ =
      RopeTable{static_cast<float*>(dc.get()), static_cast<float*>(ds.get()), max_context_, half};
  // The model stays in use only if its bytes really landed on the device.
  return backend_->Synchronize();
}

StateBytesPerToken Transformer::state_bytes_per_token() const {
  StateBytesPerToken b;
  b.kv = static_cast<int64_t>(config_.n_layers) * 2 * kv_dim() * kKvElementBytes;
  b.residual = static_cast<int64_t>(config_.n_layers - 1) * config_.d_model * sizeof(float);
  return b;
}

std::string Transformer::numerics_fingerprint() const {
  return absl::StrFormat("%s/kv-f16/res-f32/blk%d", backend_->numerics_id(), block_tokens_);
}

}  // namespace rsd
