// The shifted copies of aejax's CPU conv backend (aejax/backend/conv3x3.py) as XLA FFI
// custom calls, for experiments/native_shifts.py: on channels-first [C, B, H, W] float32,
// stack_shifts: out[t*C + c] = shift(x[c], oy[t], ox[t]); sum_shifts: out[c] = sum over t of
// shift(z[t*C + c]), taps added in order (as the Python sum does: the same floats).
// shift(x, oy, ox)[b, i, j] = x[b, i + oy, j + ox], zero outside the image. Each image is
// copied as one flat run of values with a mask for the columns that wrap: XLA's
// slice-and-pad copies loop over rows of 7-28 values.
#include <cstdint>
#include <cstring>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Valid output rows [i0, i1) of a shift by oy; 1/0 mask over a block of rows for ox.
inline void rows(int64_t h, int64_t oy, int64_t* i0, int64_t* i1) {
  *i0 = oy < 0 ? -oy : 0;
  *i1 = oy > 0 ? h - oy : h;
}

std::vector<float> column_mask(int64_t h, int64_t w, int64_t ox) {
  std::vector<float> m(h * w, 1.0f);
  for (int64_t i = 0; i < h; ++i) {
    if (ox > 0) m[i * w + w - 1] = 0.0f;
    if (ox < 0) m[i * w] = 0.0f;
  }
  return m;
}

template <bool kAdd>
inline void shift_image(const float* __restrict src, float* __restrict dst, int64_t h, int64_t w,
                        int64_t oy, int64_t ox, const float* __restrict mask) {
  int64_t i0, i1;
  rows(h, oy, &i0, &i1);
  if (!kAdd) {
    std::memset(dst, 0, i0 * w * sizeof(float));
    std::memset(dst + i1 * w, 0, (h - i1) * w * sizeof(float));
  }
  const int64_t n = (i1 - i0) * w, start = i0 * w, s = oy * w + ox;
  float* __restrict d = dst + start;
  const float* __restrict from = src + start + s;  // may point one before/after the rows: masked
  if (ox == 0) {
    for (int64_t k = 0; k < n; ++k) {
      if (kAdd) d[k] += from[k]; else d[k] = from[k];
    }
  } else {
    // from[k] with k at a masked column may read just outside this image's valid rows
    // (still inside the image or its neighbour's memory, or the first/last element+-1):
    // guard the ends.
    const float* m = mask + start;
    // Only a masked corner element can fall outside the image: leave it out.
    const int64_t kb = (start + s < 0) ? 1 : 0;
    const int64_t ke = (start + s + n > h * w) ? n - 1 : n;
    if (!kAdd) {
      if (kb) d[0] = 0.0f;
      if (ke < n) d[n - 1] = 0.0f;
    }
    for (int64_t k = kb; k < ke; ++k) {
      const float v = m[k] != 0.0f ? from[k] : 0.0f;
      if (kAdd) d[k] += v; else d[k] = v;
    }
  }
}

ffi::Error StackShiftsImpl(ffi::Buffer<ffi::F32> x, ffi::Span<const int64_t> oy,
                           ffi::Span<const int64_t> ox, ffi::ResultBuffer<ffi::F32> out) {
  auto d = x.dimensions();
  const int64_t c = d[0], b = d[1], h = d[2], w = d[3], t = oy.size(), plane = h * w;
  const float* src = x.typed_data();
  float* dst = out->typed_data();
  for (int64_t k = 0; k < t; ++k) {
    auto mask = column_mask(h, w, ox[k]);
    for (int64_t ci = 0; ci < c; ++ci)
      for (int64_t bi = 0; bi < b; ++bi)
        shift_image<false>(src + (ci * b + bi) * plane, dst + ((k * c + ci) * b + bi) * plane, h, w,
                           oy[k], ox[k], mask.data());
  }
  return ffi::Error::Success();
}

ffi::Error SumShiftsImpl(ffi::Buffer<ffi::F32> z, ffi::Span<const int64_t> oy,
                         ffi::Span<const int64_t> ox, ffi::ResultBuffer<ffi::F32> out) {
  auto d = z.dimensions();
  const int64_t t = oy.size(), c = d[0] / t, b = d[1], h = d[2], w = d[3], plane = h * w;
  const float* src = z.typed_data();
  float* dst = out->typed_data();
  std::memset(dst, 0, c * b * plane * sizeof(float));
  std::vector<std::vector<float>> masks;
  for (int64_t k = 0; k < t; ++k) masks.push_back(column_mask(h, w, ox[k]));
  for (int64_t ci = 0; ci < c; ++ci)
    for (int64_t bi = 0; bi < b; ++bi)
      for (int64_t k = 0; k < t; ++k)
        shift_image<true>(src + ((k * c + ci) * b + bi) * plane, dst + (ci * b + bi) * plane, h, w,
                          oy[k], ox[k], masks[k].data());
  return ffi::Error::Success();
}

}  // namespace

// Both kernels take one [C, B, H, W] (or [T C, B, H, W]) array and the taps' offsets.
static auto ShiftsBinding() {
  return ffi::Ffi::Bind()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Attr<ffi::Span<const int64_t>>("oy")
      .Attr<ffi::Span<const int64_t>>("ox")
      .Ret<ffi::Buffer<ffi::F32>>();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(StackShifts, StackShiftsImpl, ShiftsBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(SumShifts, SumShiftsImpl, ShiftsBinding());
