#pragma once
// Small helpers shared by the layers that wrap oneDNN primitives. Their scratch is carved
// with ScratchLayout (layers/scratch_layout.h), as every layer's is.
#include <array>
#include <cstddef>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>
#include <oneapi/dnnl/dnnl_debug.h>

#include "engine/aligned_buffer.h"
#include "engine/blocked_layout.h"
#include "engine/error.h"
#include "engine/shape.h"
#include "engine/tensor.h"
#include "layers/scratch_layout.h"

namespace ember::dnnl_util {

using dnnl::memory;

inline memory::dims dims_of(const Shape& shape) { return memory::dims(shape.dims().begin(), shape.dims().end()); }

// Row-major (plain) descriptor of a shape.
inline memory::desc plain_desc(const Shape& shape) {
  memory::dims dims = dims_of(shape);
  memory::dims strides(dims.size(), 1);
  for (int i = static_cast<int>(dims.size()) - 2; i >= 0; --i) {
    strides[static_cast<std::size_t>(i)] = strides[static_cast<std::size_t>(i) + 1] * dims[static_cast<std::size_t>(i) + 1];
  }
  return memory::desc(dims, memory::data_type::f32, strides);
}

// The layout of a tensor as oneDNN sees it.
inline memory::desc desc_of(const Tensor& t) { return t.blocked != nullptr ? t.blocked->desc : plain_desc(t.shape); }

// Every primitive runs with its scratchpad in the caller's scratch: oneDNN's documented
// condition for executing one primitive from several threads at once.
inline dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// The arguments of one primitive execution, and the execution, without a heap
// allocation in ember's code: the C++ API's dnnl::memory allocates a shared_ptr control
// block per object and primitive::execute builds a std::vector from an unordered_map
// (primitive_desc's layout queries build a std::vector too: query them in prepare()). Here
// the memory objects are created and destroyed through the C API and the argument array
// lives on the stack. (oneDNN 2.6 still allocates inside dnnl_memory_create and
// dnnl_primitive_execute; that is out of ember's reach.)
//
//   PrimitiveArguments(engine, "conv2d forward")
//       .add(DNNL_ARG_SRC, source_desc, source)
//       .add(DNNL_ARG_DST, output_desc, output)
//       .execute(primitive, stream);
//
// `what` names the primitive in the ember::Error thrown when oneDNN refuses a call.
class PrimitiveArguments {
 public:
  static constexpr int capacity = 8;

  PrimitiveArguments(const dnnl::engine& engine, const char* what) : engine_(engine.get()), what_(what) {}
  ~PrimitiveArguments() {
    for (int i = 0; i < count_; ++i) dnnl_memory_destroy(arguments_[static_cast<std::size_t>(i)].memory);
  }
  PrimitiveArguments(const PrimitiveArguments&) = delete;
  PrimitiveArguments& operator=(const PrimitiveArguments&) = delete;

  // `data` is the caller's buffer in layout `desc`; oneDNN neither copies nor owns it.
  PrimitiveArguments& add(int name, const memory::desc& desc, const void* data) {
    if (count_ == capacity) fail("more than " + std::to_string(capacity) + " arguments");
    dnnl_memory_t memory_handle = nullptr;
    check(dnnl_memory_create(&memory_handle, &desc.data, engine_, const_cast<void*>(data)), "creating an argument's memory");
    arguments_[static_cast<std::size_t>(count_++)] = dnnl_exec_arg_t{name, memory_handle};
    return *this;
  }

  void execute(const dnnl::primitive& primitive, dnnl::stream& stream) const {
    check(dnnl_primitive_execute(primitive.get(), stream.get(), count_, arguments_.data()), "executing");
  }

 private:
  void check(dnnl_status_t status, const char* action) const {
    if (status != dnnl_success) fail(std::string(action) + " failed: " + dnnl_status2str(status));
  }
  [[noreturn]] void fail(const std::string& reason) const { throw Error(std::string("oneDNN ") + what_ + ": " + reason); }

  dnnl_engine_t engine_;
  const char* what_;
  std::array<dnnl_exec_arg_t, capacity> arguments_{};
  int count_ = 0;
};

}  // namespace ember::dnnl_util
