// One decode step of a Llama-family model on the CPU, float32: every layer in one call.
//
// The matmuls stay with ATen (oneDNN/MKL); what this file does by hand is everything between them, which
// in eager torch is ~15 small kernels per layer, each paying dispatch and a pass over cold memory:
// RMSNorm, rotary, the KV-cache write, attention of one query against each row's own cached length (no
// mask, no padding read; its softmax with a vectorisable exp), SiLU*up. Same math and the same float32 as
// slowthink/backends.py's torch path; only summation order differs (the engine's tests hold it to HF
// generate's greedy tokens).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// x * rsqrt(mean(x^2) + eps), row by row (the RMSNorm weight is folded into the next matmul).
torch::Tensor rms(const torch::Tensor& x, double eps) {
  auto out = torch::empty_like(x);
  const int64_t n = x.size(0), d = x.size(1);
  const float* src = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, n, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* a = src + r * d;
      float ss = 0.f;
#pragma omp simd reduction(+ : ss)
      for (int64_t j = 0; j < d; ++j) ss += a[j] * a[j];
      const float inv = 1.f / std::sqrt(ss / d + static_cast<float>(eps));
      for (int64_t j = 0; j < d; ++j) dst[r * d + j] = a[j] * inv;
    }
  });
  return out;
}

// e^x for x <= 0 (a softmax's scores minus their max), written so that a loop of it vectorises: Cody-Waite
// reduction x = n ln2 + r, |r| <= ln2/2, then a degree-6 polynomial for e^r (Cephes expf; relative error
// ~2e-7, the float rounding level) scaled by 2^n. Inputs below -87 give e^-87 (~1.6e-38, the bottom of
// float's normal range): next to the max's weight of 1 that is 0 to float precision, and 2^n stays normal.
#pragma omp declare simd
inline float exp_nonpositive(float x) {
  x = std::max(x, -87.f);
  const float n = std::nearbyint(x * 1.44269504f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float e = 1.9875691500e-4f;
  e = e * r + 1.3981999507e-3f;
  e = e * r + 8.3334519073e-3f;
  e = e * r + 4.1665795894e-2f;
  e = e * r + 1.6666665459e-1f;
  e = e * r + 5.0000001201e-1f;
  e = e * r * r + r + 1.f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return e * scale;
}

constexpr int64_t kMaxHeadDim = 512;

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  return b.numel() ? at::addmm(b, x, w.t()) : at::mm(x, w.t());
}

// The new residual x + a @ w_t (+ b).
torch::Tensor add_proj(const torch::Tensor& x, const torch::Tensor& a, const torch::Tensor& w_t,
                       const torch::Tensor& b) {
  auto out = at::addmm(x, a, w_t);
  if (b.numel()) out.add_(b);
  return out;
}

}  // namespace

// weights: 8 tensors per layer, [qkv, qkv_b, o_t, o_b, gate_up, gate_up_b, down_t, down_b] (an empty
// tensor for a missing bias). cache: [layers, slots, 2, kv_heads, max_len, head_dim]. pos: [B] int64, the
// position each row writes now. rope: [max_len, 2, head_dim], cos and the sign-folded sin.
torch::Tensor decode_layers(torch::Tensor x, const std::vector<torch::Tensor>& weights, torch::Tensor cache,
                            torch::Tensor pos, torch::Tensor rope, int64_t H, int64_t KV, double eps,
                            double scale) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && cache.scalar_type() == torch::kFloat32, "float32 only");
  TORCH_CHECK(cache.is_contiguous() && rope.is_contiguous() && x.is_contiguous(), "contiguous tensors only");
  TORCH_CHECK(pos.scalar_type() == torch::kInt64 && pos.is_contiguous(), "pos: contiguous int64");
  const int64_t B = x.size(0), L = cache.size(0), S = cache.size(1), T = cache.size(4), D = cache.size(5);
  TORCH_CHECK(static_cast<int64_t>(weights.size()) == 8 * L, "8 weight tensors per layer");
  TORCH_CHECK(D % 2 == 0 && D <= kMaxHeadDim && H % KV == 0, "head_dim must be even and at most 512");
  const int64_t half = D / 2, group = H / KV;
  const int64_t* p = pos.data_ptr<int64_t>();
  const float* rp = rope.data_ptr<float>();
  float* cp = cache.data_ptr<float>();
  auto attn = torch::empty({B, H * D}, x.options());
  float* ap = attn.data_ptr<float>();
  int64_t longest = 0;
  for (int64_t b = 0; b < B; ++b) longest = std::max(longest, p[b] + 1);

  for (int64_t l = 0; l < L; ++l) {
    const torch::Tensor* w = weights.data() + 8 * l;
    auto qkv = linear(rms(x, eps), w[0], w[1]).contiguous();  // [B, (H + 2KV) * D]
    float* qp = qkv.data_ptr<float>();
    const int64_t row = (H + 2 * KV) * D;
    float* layer_cache = cp + l * S * 2 * KV * T * D;

    // Per row: rotary on its q and k heads, its k and v into the cache at its position, then each query
    // head against the row's own positions 0..pos only (nothing past a row's length is read or masked).
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      float tmp[kMaxHeadDim];
      std::vector<float> score(longest);
      for (int64_t b = b0; b < b1; ++b) {
        const float* cs = rp + p[b] * 2 * D;
        const float* sn = cs + D;
        for (int64_t h = 0; h < H + KV; ++h) {
          float* v = qp + b * row + h * D;
          for (int64_t j = 0; j < D; ++j) tmp[j] = v[j] * cs[j] + v[(j + half) % D] * sn[j];
          std::memcpy(v, tmp, D * sizeof(float));
        }
        for (int64_t kv = 0; kv < 2; ++kv)
          for (int64_t h = 0; h < KV; ++h)
            std::memcpy(layer_cache + (((b * 2 + kv) * KV + h) * T + p[b]) * D,
                        qp + b * row + (H + kv * KV + h) * D, D * sizeof(float));
        const int64_t n = p[b] + 1;
        for (int64_t h = 0; h < H; ++h) {
          const float* q = qp + b * row + h * D;
          const float* k = layer_cache + ((b * 2 + 0) * KV + h / group) * T * D;
          const float* v = layer_cache + ((b * 2 + 1) * KV + h / group) * T * D;
          float m = -INFINITY;
          for (int64_t t = 0; t < n; ++t) {
            float dot = 0.f;
#pragma omp simd reduction(+ : dot)  // vectorised: the order of a float sum is ours to choose
            for (int64_t j = 0; j < D; ++j) dot += q[j] * k[t * D + j];
            score[t] = dot * static_cast<float>(scale);
            m = std::max(m, score[t]);
          }
          float total = 0.f;
#pragma omp simd reduction(+ : total)
          for (int64_t t = 0; t < n; ++t) {
            score[t] = exp_nonpositive(score[t] - m);
            total += score[t];
          }
          float* out = ap + b * H * D + h * D;
          std::fill(out, out + D, 0.f);
          for (int64_t t = 0; t < n; ++t) {
#pragma omp simd
            for (int64_t j = 0; j < D; ++j) out[j] += score[t] * v[t * D + j];
          }
          const float inv = 1.f / total;
          for (int64_t j = 0; j < D; ++j) out[j] *= inv;
        }
      }
    });

    x = add_proj(x, attn, w[2], w[3]);
    auto gu = linear(rms(x, eps), w[4], w[5]).contiguous();  // [B, 2 * inter]
    const int64_t inter = gu.size(1) / 2;
    auto act = torch::empty({B, inter}, x.options());
    const float* g = gu.data_ptr<float>();
    float* o = act.data_ptr<float>();
    at::parallel_for(0, B, 16, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        for (int64_t j = 0; j < inter; ++j) {
          const float a = g[b * 2 * inter + j];
          o[b * inter + j] = a / (1.f + std::exp(-a)) * g[b * 2 * inter + inter + j];
        }
    });
    x = add_proj(x, act, w[6], w[7]);
  }
  return x;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // Without the GIL: a trainer's learner (another Python thread) runs while a background rollout decodes.
  m.def("decode_layers", &decode_layers, "every layer of one Llama decode step, float32 CPU",
        py::call_guard<py::gil_scoped_release>());
}
