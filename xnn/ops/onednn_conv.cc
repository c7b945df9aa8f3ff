// 2-D convolution and its two gradients on the CPU through oneDNN, as XLA FFI handlers.
//
// Layouts are Flax's: input/output NHWC, kernel HWIO (grouped: HW(I/G)O, output
// channels group-major).  Built and loaded by xnn/ops/onednn.py; see its docstring.
//
//   XnnOnednnConvFwd        (x, w)  -> y      y  = conv(x, w)
//   XnnOnednnConvBwdData    (dy, w) -> dx     dx = d<conv(x, w), dy>/dx
//   XnnOnednnConvBwdWeights (x, dy) -> dw     dw = d<conv(x, w), dy>/dw
//
// Attributes: strides[2], pad_lo[2], pad_hi[2], dilation[2] (XLA's convention: 1 is
// no dilation; oneDNN counts the gaps, d - 1) and groups.  Activations are read and
// written in place as NHWC; the kernel is reordered to the primitive's preferred
// layout (and the weight gradient back) when that differs from HWIO.  Primitives are
// cached by configuration; scratchpad and reordered kernel live in per-thread
// buffers, so concurrent calls (several XLA devices on one host) never share memory.

#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;

namespace {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

enum class Op { kFwd, kBwdData, kBwdWeights };

struct Geometry {
  int64_t n, h, w, c;           // input
  int64_t kh, kw, o;            // kernel (input channels per group = c / groups)
  int64_t ho, wo;               // output
  int64_t groups;
  memory::dims strides, pad_lo, pad_hi, dil;  // dil in oneDNN's convention (gaps)
};

memory::desc ActivationDesc(int64_t n, int64_t c, int64_t h, int64_t w, memory::data_type dt) {
  return memory::desc({n, c, h, w}, dt, memory::format_tag::nhwc);
}

// The HWIO (grouped: HW(I/G)O) kernel as oneDNN's OIHW / GOIHW logical dims with strides.
memory::desc KernelDesc(const Geometry& g, memory::data_type dt) {
  const int64_t ig = g.c / g.groups, og = g.o / g.groups;
  if (g.groups == 1) {
    return memory::desc({g.o, g.c, g.kh, g.kw}, dt, {1, g.o, g.kw * g.c * g.o, g.c * g.o});
  }
  return memory::desc({g.groups, og, ig, g.kh, g.kw}, dt,
                      {og, 1, g.o, g.kw * ig * g.o, ig * g.o});
}

memory::desc AnyKernelDesc(const Geometry& g, memory::data_type dt) {
  const int64_t ig = g.c / g.groups, og = g.o / g.groups;
  if (g.groups == 1) return memory::desc({g.o, g.c, g.kh, g.kw}, dt, memory::format_tag::any);
  return memory::desc({g.groups, og, ig, g.kh, g.kw}, dt, memory::format_tag::any);
}

struct Entry {
  dnnl::primitive prim;
  memory::desc user_kernel, prim_kernel, scratch;
  bool reorder = false;
  dnnl::reorder kernel_reorder;  // user -> prim (fwd, bwd data) or prim -> user (bwd weights)
};

std::string Key(Op op, memory::data_type dt, const Geometry& g) {
  std::ostringstream s;
  s << static_cast<int>(op) << ':' << static_cast<int>(dt) << ':' << g.n << ',' << g.h << ','
    << g.w << ',' << g.c << ':' << g.kh << ',' << g.kw << ',' << g.o << ':' << g.ho << ','
    << g.wo << ':' << g.groups;
  for (const auto* v : {&g.strides, &g.pad_lo, &g.pad_hi, &g.dil}) {
    s << ':' << (*v)[0] << ',' << (*v)[1];
  }
  return s.str();
}

std::shared_ptr<Entry> Build(Op op, memory::data_type dt, const Geometry& g) {
  auto& eng = Engine();
  memory::desc src = ActivationDesc(g.n, g.c, g.h, g.w, dt);
  memory::desc dst = ActivationDesc(g.n, g.o, g.ho, g.wo, dt);
  memory::desc wany = AnyKernelDesc(g, dt);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto fwd_pd = dnnl::convolution_forward::primitive_desc(
      eng, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src, wany,
      dst, g.strides, g.dil, g.pad_lo, g.pad_hi, attr);
  auto e = std::make_shared<Entry>();
  e->user_kernel = KernelDesc(g, dt);
  // The backward primitives take the same descriptors plus the forward one as a hint.
  auto set = [&](dnnl::primitive prim, const auto& pd, const memory::desc& kernel) {
    e->prim = prim;
    e->prim_kernel = kernel;
    e->scratch = pd.scratchpad_desc();
  };
  if (op == Op::kFwd) {
    set(dnnl::convolution_forward(fwd_pd), fwd_pd, fwd_pd.weights_desc());
  } else if (op == Op::kBwdData) {
    dnnl::convolution_backward_data::primitive_desc pd(
        eng, dnnl::algorithm::convolution_direct, src, wany, dst, g.strides, g.dil, g.pad_lo,
        g.pad_hi, fwd_pd, attr);
    set(dnnl::convolution_backward_data(pd), pd, pd.weights_desc());
  } else {
    dnnl::convolution_backward_weights::primitive_desc pd(
        eng, dnnl::algorithm::convolution_direct, src, wany, dst, g.strides, g.dil, g.pad_lo,
        g.pad_hi, fwd_pd, attr);
    set(dnnl::convolution_backward_weights(pd), pd, pd.diff_weights_desc());
  }
  e->reorder = e->prim_kernel != e->user_kernel;
  if (e->reorder) {
    if (op == Op::kBwdWeights) {
      e->kernel_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(
          eng, e->prim_kernel, eng, e->user_kernel));
    } else {
      e->kernel_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(
          eng, e->user_kernel, eng, e->prim_kernel));
    }
  }
  return e;
}

std::shared_ptr<Entry> Get(Op op, memory::data_type dt, const Geometry& g) {
  static std::mutex mu;
  static std::unordered_map<std::string, std::shared_ptr<Entry>> cache;
  const std::string key = Key(op, dt, g);
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  auto e = Build(op, dt, g);
  std::lock_guard<std::mutex> lock(mu);
  return cache.emplace(key, e).first->second;
}

// Per-thread reusable buffers (0: scratchpad, 1: reordered kernel): calls are
// synchronous, so a thread's buffers are never in use twice at once, and reusing
// them avoids a fresh (page-faulting) allocation per call.
void* Workspace(int slot, size_t bytes) {
  thread_local std::vector<char> buffers[2];
  auto& b = buffers[slot];
  if (b.size() < bytes + 64) b.resize(bytes + 64);
  auto p = reinterpret_cast<uintptr_t>(b.data());
  return reinterpret_cast<void*>((p + 63) & ~uintptr_t{63});  // 64-byte aligned
}

ffi::Error DataType(ffi::DataType t, memory::data_type* dt) {
  switch (t) {
    case ffi::DataType::F32: *dt = memory::data_type::f32; return ffi::Error::Success();
    case ffi::DataType::BF16: *dt = memory::data_type::bf16; return ffi::Error::Success();
    default: return ffi::Error::InvalidArgument("xnn oneDNN convolution: dtype must be f32 or bf16");
  }
}

ffi::Error MakeGeometry(ffi::Span<const int64_t> x, ffi::Span<const int64_t> k,
                        ffi::Span<const int64_t> y, ffi::Span<const int64_t> strides,
                        ffi::Span<const int64_t> pad_lo, ffi::Span<const int64_t> pad_hi,
                        ffi::Span<const int64_t> dil, int64_t groups, Geometry* g) {
  if (x.size() != 4 || k.size() != 4 || y.size() != 4 || strides.size() != 2 ||
      pad_lo.size() != 2 || pad_hi.size() != 2 || dil.size() != 2 || groups < 1) {
    return ffi::Error::InvalidArgument("xnn oneDNN convolution: expected 2-D NHWC/HWIO operands");
  }
  *g = Geometry{x[0], x[1], x[2], x[3], k[0], k[1], k[3], y[1], y[2], groups,
                {strides[0], strides[1]}, {pad_lo[0], pad_lo[1]}, {pad_hi[0], pad_hi[1]},
                {dil[0] - 1, dil[1] - 1}};
  if (g->c % groups || g->o % groups || k[2] * groups != g->c || y[0] != g->n || y[3] != g->o) {
    return ffi::Error::InvalidArgument("xnn oneDNN convolution: inconsistent shapes/groups");
  }
  return ffi::Error::Success();
}

ffi::Error Run(Op op, ffi::AnyBuffer a, ffi::AnyBuffer b, void* out,
               ffi::Span<const int64_t> x_dims, ffi::Span<const int64_t> k_dims,
               ffi::Span<const int64_t> y_dims, ffi::Span<const int64_t> strides,
               ffi::Span<const int64_t> pad_lo, ffi::Span<const int64_t> pad_hi,
               ffi::Span<const int64_t> dil, int64_t groups) {
  memory::data_type dt;
  if (auto err = DataType(a.element_type(), &dt); !err.success()) return err;
  Geometry g;
  if (auto err = MakeGeometry(x_dims, k_dims, y_dims, strides, pad_lo, pad_hi, dil, groups, &g);
      !err.success()) {
    return err;
  }
  try {
    auto e = Get(op, dt, g);
    auto& eng = Engine();
    dnnl::stream stream(eng);
    memory src(ActivationDesc(g.n, g.c, g.h, g.w, dt), eng, DNNL_MEMORY_NONE);
    memory dst(ActivationDesc(g.n, g.o, g.ho, g.wo, dt), eng, DNNL_MEMORY_NONE);
    memory user_kernel(e->user_kernel, eng, DNNL_MEMORY_NONE);
    memory scratch(e->scratch, eng, Workspace(0, e->scratch.get_size()));
    memory prim_kernel = e->reorder
        ? memory(e->prim_kernel, eng, Workspace(1, e->prim_kernel.get_size()))
        : user_kernel;
    if (op == Op::kFwd) {
      src.set_data_handle(a.untyped_data());
      user_kernel.set_data_handle(b.untyped_data());
      dst.set_data_handle(out);
      if (e->reorder) e->kernel_reorder.execute(stream, user_kernel, prim_kernel);
      e->prim.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, prim_kernel},
                               {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}});
    } else if (op == Op::kBwdData) {
      dst.set_data_handle(a.untyped_data());     // dy
      user_kernel.set_data_handle(b.untyped_data());
      src.set_data_handle(out);                  // dx
      if (e->reorder) e->kernel_reorder.execute(stream, user_kernel, prim_kernel);
      e->prim.execute(stream, {{DNNL_ARG_DIFF_DST, dst}, {DNNL_ARG_WEIGHTS, prim_kernel},
                               {DNNL_ARG_DIFF_SRC, src}, {DNNL_ARG_SCRATCHPAD, scratch}});
    } else {
      src.set_data_handle(a.untyped_data());     // x
      dst.set_data_handle(b.untyped_data());     // dy
      user_kernel.set_data_handle(out);          // dw
      e->prim.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, dst},
                               {DNNL_ARG_DIFF_WEIGHTS, prim_kernel},
                               {DNNL_ARG_SCRATCHPAD, scratch}});
      if (e->reorder) e->kernel_reorder.execute(stream, prim_kernel, user_kernel);
    }
    stream.wait();
  } catch (const dnnl::error& err) {
    return ffi::Error::Internal(std::string("xnn oneDNN convolution: ") + err.what());
  }
  return ffi::Error::Success();
}

ffi::Error FwdImpl(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y,
                   ffi::Span<const int64_t> strides, ffi::Span<const int64_t> pad_lo,
                   ffi::Span<const int64_t> pad_hi, ffi::Span<const int64_t> dil,
                   int64_t groups) {
  return Run(Op::kFwd, x, w, y->untyped_data(), x.dimensions(), w.dimensions(),
             y->dimensions(), strides, pad_lo, pad_hi, dil, groups);
}

ffi::Error BwdDataImpl(ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx,
                       ffi::Span<const int64_t> strides, ffi::Span<const int64_t> pad_lo,
                       ffi::Span<const int64_t> pad_hi, ffi::Span<const int64_t> dil,
                       int64_t groups) {
  return Run(Op::kBwdData, dy, w, dx->untyped_data(), dx->dimensions(), w.dimensions(),
             dy.dimensions(), strides, pad_lo, pad_hi, dil, groups);
}

ffi::Error BwdWeightsImpl(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw,
                          ffi::Span<const int64_t> strides, ffi::Span<const int64_t> pad_lo,
                          ffi::Span<const int64_t> pad_hi, ffi::Span<const int64_t> dil,
                          int64_t groups) {
  return Run(Op::kBwdWeights, x, dy, dw->untyped_data(), x.dimensions(), dw->dimensions(),
             dy.dimensions(), strides, pad_lo, pad_hi, dil, groups);
}

}  // namespace

#define XNN_CONV_BINDING                                    \
  ffi::Ffi::Bind()                                          \
      .Arg<ffi::AnyBuffer>()                                \
      .Arg<ffi::AnyBuffer>()                                \
      .Ret<ffi::AnyBuffer>()                                \
      .Attr<ffi::Span<const int64_t>>("strides")            \
      .Attr<ffi::Span<const int64_t>>("pad_lo")             \
      .Attr<ffi::Span<const int64_t>>("pad_hi")             \
      .Attr<ffi::Span<const int64_t>>("dilation")           \
      .Attr<int64_t>("groups")

XLA_FFI_DEFINE_HANDLER_SYMBOL(XnnOnednnConvFwd, FwdImpl, XNN_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(XnnOnednnConvBwdData, BwdDataImpl, XNN_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(XnnOnednnConvBwdWeights, BwdWeightsImpl, XNN_CONV_BINDING);

extern "C" const char* XnnOnednnVersion() {
  static std::string v = [] {
    const dnnl_version_t* ver = dnnl_version();
    std::ostringstream s;
    s << ver->major << '.' << ver->minor << '.' << ver->patch << " (" << ver->cpu_runtime << ")";
    return s.str();
  }();
  return v.c_str();
}
