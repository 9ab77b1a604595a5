#include "engine/step_reorder.h"

#include "engine/error.h"
#include "layers/dnnl_util.h"

namespace ember {

std::shared_ptr<const Reorder> make_reorder(const dnnl::engine& engine, const BlockedLayout& blocked, const Shape& shape,
                                            bool with_gradient) {
  auto reorder = std::make_shared<Reorder>();
  reorder->blocked = blocked.desc;
  reorder->plain = dnnl_util::plain_desc(shape);
  reorder->to_plain = dnnl::reorder(dnnl::reorder::primitive_desc(engine, reorder->blocked, engine, reorder->plain));
  if (with_gradient) {
    reorder->gradient_to_blocked =
        dnnl::reorder(dnnl::reorder::primitive_desc(engine, reorder->plain, engine, reorder->blocked));
  }
  return reorder;
}

void Reorder::run_to_plain(const float* blocked_data, float* plain_data, const dnnl::engine& engine,
                           dnnl::stream& stream) const {
  dnnl_util::PrimitiveArguments(engine, "reorder to plain")
      .add(DNNL_ARG_FROM, blocked, blocked_data)
      .add(DNNL_ARG_TO, plain, plain_data)
      .execute(to_plain, stream);
}

void Reorder::run_gradient_to_blocked(const float* plain_gradient, float* blocked_gradient, const dnnl::engine& engine,
                                      dnnl::stream& stream) const {
  if (!gradient_to_blocked) throw Error("step program: a gradient reorder was not prepared (inference program)");
  dnnl_util::PrimitiveArguments(engine, "reorder of a gradient to blocked")
      .add(DNNL_ARG_FROM, plain, plain_gradient)
      .add(DNNL_ARG_TO, blocked, blocked_gradient)
      .execute(*gradient_to_blocked, stream);
}

}  // namespace ember
