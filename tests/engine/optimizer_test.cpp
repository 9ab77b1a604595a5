#include "engine/optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "engine/error.h"
#include "engine/random.h"

namespace ember {
namespace {

template <class Function>
std::string error_message(Function&& function) {
  try {
    function();
  } catch (const Error& error) {
    return error.what();
  }
  return "(no error)";
}

// ---------------------------------------------------------------------------------------
// Scalar references written from PyTorch 1.13's torch/optim/{sgd,adam,adamw}.py
// (_single_tensor_* functions). Tensor arithmetic is float32; Python scalars (lr, betas,
// 1 - beta, bias corrections, step size) are doubles that PyTorch casts to float where
// they meet a tensor op.

struct ReferenceSgd {
  OptimizerOptions options;
  std::vector<float> momentum_buffer;
  bool has_buffer = false;

  void step(std::vector<float>& params, const std::vector<float>& grads, float lr) {
    const double weight_decay = options.weight_decay.value_or(0.0f);
    const double momentum = options.momentum;
    if (momentum_buffer.empty()) momentum_buffer.resize(params.size());
    for (std::size_t i = 0; i < params.size(); ++i) {
      float d_p = grads[i];
      if (weight_decay != 0.0) d_p = d_p + static_cast<float>(weight_decay) * params[i];  // grad.add(param, alpha=wd)
      if (momentum != 0.0) {
        float& buf = momentum_buffer[i];
        if (!has_buffer) {
          buf = d_p;  // torch.clone(d_p)
        } else {
          buf = buf * static_cast<float>(momentum) + static_cast<float>(1.0 - options.dampening) * d_p;
        }
        d_p = options.nesterov ? d_p + static_cast<float>(momentum) * buf : buf;
      }
      params[i] = params[i] + static_cast<float>(-static_cast<double>(lr)) * d_p;  // param.add_(d_p, alpha=-lr)
    }
    has_buffer = true;
  }
};

struct ReferenceAdam {
  OptimizerOptions options;
  bool decoupled = false;  // AdamW
  std::vector<float> exp_avg, exp_avg_sq;
  double step_count = 0;

  void step(std::vector<float>& params, const std::vector<float>& grads, float lr_float) {
    const double lr = lr_float;
    const double weight_decay = options.weight_decay.value_or(decoupled ? 1e-2f : 0.0f);
    const double beta1 = options.beta1, beta2 = options.beta2, eps = options.epsilon;
    if (exp_avg.empty()) {
      exp_avg.resize(params.size());
      exp_avg_sq.resize(params.size());
    }
    step_count += 1;
    const double bias_correction1 = 1 - std::pow(beta1, step_count);
    const double bias_correction2 = 1 - std::pow(beta2, step_count);
    const double step_size = lr / bias_correction1;
    const double bias_correction2_sqrt = std::sqrt(bias_correction2);
    for (std::size_t i = 0; i < params.size(); ++i) {
      float grad = grads[i];
      if (decoupled) {
        params[i] = params[i] * static_cast<float>(1 - lr * weight_decay);  // param.mul_(1 - lr * wd)
      } else if (weight_decay != 0) {
        grad = grad + static_cast<float>(weight_decay) * params[i];  // grad.add(param, alpha=wd)
      }
      exp_avg[i] = exp_avg[i] * static_cast<float>(beta1) + static_cast<float>(1 - beta1) * grad;
      exp_avg_sq[i] = exp_avg_sq[i] * static_cast<float>(beta2) + static_cast<float>(1 - beta2) * grad * grad;
      const float denom = std::sqrt(exp_avg_sq[i]) / static_cast<float>(bias_correction2_sqrt) + static_cast<float>(eps);
      params[i] = params[i] + static_cast<float>(-step_size) * (exp_avg[i] / denom);  // addcdiv_
    }
  }
};

// Relative error with a floor, so parameters crossing zero do not blow it up.
void expect_relative(const std::vector<float>& actual, const std::vector<float>& expected, double tolerance,
                     const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size());
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const double scale = std::max(std::abs(static_cast<double>(expected[i])), 1e-2);
    ASSERT_LE(std::abs(static_cast<double>(actual[i]) - expected[i]) / scale, tolerance)
        << what << " element " << i << ": " << actual[i] << " vs " << expected[i];
  }
}

std::vector<float> random_vector(std::size_t n, std::uint64_t seed, float scale) {
  Random random(seed);
  std::vector<float> v(n);
  for (float& x : v) x = scale * random.normal();
  return v;
}

// The optimizer keeps spans over the gradient block: refill it in place, never reassign.
void fill(std::vector<float>& block, const std::vector<float>& values) {
  ASSERT_EQ(block.size(), values.size());
  std::copy(values.begin(), values.end(), block.begin());
}

struct Case {
  std::string name;
  std::string optimizer;
  OptimizerOptions options;
};

std::vector<Case> reference_cases() {
  std::vector<Case> cases;
  OptimizerOptions o;
  o.learning_rate = 0.1f;
  cases.push_back({"sgd plain", "sgd", o});
  o.learning_rate = 0.05f;
  o.momentum = 0.9f;
  o.dampening = 0.25f;
  o.weight_decay = 0.01f;
  cases.push_back({"sgd momentum dampening weight decay", "sgd", o});
  o.dampening = 0.0f;
  o.nesterov = true;
  o.weight_decay = 0.02f;
  cases.push_back({"sgd nesterov weight decay", "sgd", o});
  OptimizerOptions a;
  a.learning_rate = 0.01f;
  a.beta1 = 0.8f;
  a.beta2 = 0.95f;
  a.epsilon = 1e-6f;
  a.weight_decay = 0.1f;
  cases.push_back({"adam weight decay", "adam", a});
  cases.push_back({"adamw weight decay", "adamw", a});
  OptimizerOptions d;
  d.learning_rate = 0.003f;
  cases.push_back({"adam defaults", "adam", d});
  cases.push_back({"adamw default weight decay", "adamw", d});
  return cases;
}

// Runs the reference of `c` one step; `lr` is the step's rate.
struct Reference {
  explicit Reference(const Case& c) {
    // Both get the options (only one runs), so neither holds an unset optional.
    sgd.options = adam.options = c.options;
    is_sgd = c.optimizer == "sgd";
    adam.decoupled = c.optimizer == "adamw";
  }
  void step(std::vector<float>& params, const std::vector<float>& grads, float lr) {
    if (is_sgd) {
      sgd.step(params, grads, lr);
    } else {
      adam.step(params, grads, lr);
    }
  }
  bool is_sgd = false;
  ReferenceSgd sgd;
  ReferenceAdam adam;
};

TEST(Optimizer, MatchesPyTorchUpdateRulesOverSteps) {
  for (const Case& c : reference_cases()) {
    for (std::size_t n : {1, 7, 17, 64, 1003}) {
      std::vector<float> params = random_vector(n, 100 + n, 1.0f);
      std::vector<float> grads(n);
      std::vector<float> expected = params;
      auto optimizer = make_optimizer(c.optimizer, c.options, params, grads);
      Reference reference(c);
      for (int step = 0; step < 8; ++step) {
        fill(grads, random_vector(n, 1000 * n + static_cast<std::size_t>(step), step == 3 ? 30.0f : 0.5f));
        // A scheduled rate from step 5 on.
        const float lr = step < 5 ? c.options.learning_rate : c.options.learning_rate * 0.5f;
        optimizer->set_learning_rate(lr);
        optimizer->step();
        reference.step(expected, grads, lr);
        // 2e-5: the vector kernels fuse multiply-adds, the reference rounds each product
        // (as PyTorch's scalar path does); over 8 steps that differs by a few ulps.
        expect_relative(params, expected, 2e-5, c.name + " n " + std::to_string(n) + " step " + std::to_string(step));
      }
      EXPECT_EQ(optimizer->step_count(), 8);
    }
  }
}

// Produced by tests/engine/optimizer_goldens.py with torch 1.13.0a0
constexpr float golden_initial[7] = {-0.942041516f, -0.196202874f, -0.480311632f, -0.266717315f, -0.883398533f, 0.401289463f, -0.89640522f};
constexpr float golden_gradients[5][7] = {
    {-0.0222890023f, -0.725839376f, -0.646146834f, -0.0182976704f, -0.366550952f, 0.10977485f, 0.31461516f},
    {-0.431454271f, 1.09577f, 0.244176641f, 0.121146351f, -0.330960751f, -0.297698706f, -0.58051616f},
    {-0.304805517f, 0.415529341f, -0.0562798008f, 40.0f, 0.486132801f, 0.552254558f, -0.553898871f},
    {-0.0843402743f, 0.0948470905f, 0.242439002f, 0.0444726981f, 0.121297933f, -0.386128485f, -0.154154167f},
    {0.168214649f, 0.0459424071f, -0.447812378f, -0.142038614f, 0.641293108f, 1.00000001e-07f, 0.213883802f},
};
constexpr float golden_sgd_plain[5][7] = {
    {-0.939812601f, -0.123618938f, -0.415696949f, -0.264887542f, -0.846743464f, 0.390311986f, -0.927866757f},
    {-0.896667182f, -0.233195946f, -0.440114617f, -0.277002186f, -0.813647389f, 0.420081854f, -0.869815111f},
    {-0.866186619f, -0.274748892f, -0.434486628f, -4.27700233f, -0.862260699f, 0.364856392f, -0.81442523f},
    {-0.857752562f, -0.2842336f, -0.458730519f, -4.28144979f, -0.874390483f, 0.403469235f, -0.7990098f},
    {-0.874574006f, -0.288827837f, -0.413949281f, -4.26724577f, -0.938519776f, 0.403469235f, -0.820398152f},
};
constexpr float golden_sgd_momentum_dampening_wd[5][7] = {
    {-0.940456033f, -0.159812808f, -0.447764128f, -0.265669078f, -0.864629269f, 0.39560008f, -0.911687791f},
    {-0.922496915f, -0.16809319f, -0.427460104f, -0.269169033f, -0.835001707f, 0.40149498f, -0.903330863f},
    {-0.894557536f, -0.191064849f, -0.406915694f, -1.77221799f, -0.826253712f, 0.385940284f, -0.874699652f},
    {-0.865913868f, -0.21522446f, -0.397364587f, -3.12596536f, -0.822619379f, 0.386276156f, -0.84282279f},
    {-0.846117914f, -0.238610238f, -0.371826619f, -4.33783913f, -0.843088448f, 0.386433572f, -0.8218382f},
};
constexpr float golden_sgd_nesterov_wd[5][7] = {
    {-0.938134193f, -0.126875341f, -0.418015093f, -0.264472276f, -0.846897721f, 0.390098393f, -0.924590468f},
    {-0.893697798f, -0.201177001f, -0.413859636f, -0.274521589f, -0.798286498f, 0.412867665f, -0.879700541f},
    {-0.843310297f, -0.257946074f, -0.393375099f, -4.07783079f, -0.814857721f, 0.367066026f, -0.811963141f},
    {-0.802867472f, -0.299040854f, -0.400128365f, -5.69753313f, -0.81858933f, 0.387052357f, -0.76052928f},
    {-0.785478175f, -0.335786551f, -0.352348149f, -7.13261509f, -0.876590312f, 0.387259215f, -0.740780473f},
};
constexpr float golden_adam_wd[5][7] = {
    {-0.932041585f, -0.186202884f, -0.470311642f, -0.256717533f, -0.873398542f, 0.391289532f, -0.906405151f},
    {-0.923112392f, -0.189073563f, -0.466368526f, -0.261111259f, -0.863443196f, 0.39491117f, -0.901008368f},
    {-0.913718879f, -0.193148509f, -0.462487102f, -0.268041342f, -0.861258864f, 0.389858872f, -0.893393099f},
    {-0.904983461f, -0.196676269f, -0.461418927f, -0.273406059f, -0.859899402f, 0.389523476f, -0.886026204f},
    {-0.898834467f, -0.199615285f, -0.457034737f, -0.277647972f, -0.863058805f, 0.388910979f, -0.881063282f},
};
constexpr float golden_adamw_default_wd[5][7] = {
    {-0.931947291f, -0.186183244f, -0.4702636f, -0.256690651f, -0.873310208f, 0.391249329f, -0.906315565f},
    {-0.924077094f, -0.188670322f, -0.466580659f, -0.26302278f, -0.863262475f, 0.395875245f, -0.902873278f},
    {-0.915389419f, -0.192424953f, -0.463213474f, -0.269399613f, -0.862174273f, 0.392091542f, -0.896691561f},
    {-0.907429039f, -0.195888743f, -0.462521464f, -0.274624199f, -0.862282515f, 0.392444253f, -0.890666187f},
    {-0.902630806f, -0.198993042f, -0.459165424f, -0.279016048f, -0.865995228f, 0.392736286f, -0.886999905f},
};
constexpr float golden_adamw_wd[5][7] = {
    {-0.920157492f, -0.175810471f, -0.459351003f, -0.246183902f, -0.861631751f, 0.380486876f, -0.914612412f},
    {-0.902798116f, -0.180465847f, -0.451148123f, -0.258379757f, -0.839983046f, 0.389039993f, -0.906088233f},
    {-0.883827627f, -0.18765834f, -0.44357872f, -0.270611703f, -0.836301267f, 0.380798101f, -0.89210856f},
    {-0.866312861f, -0.194270626f, -0.441394091f, -0.280550152f, -0.835018098f, 0.380818367f, -0.878443778f},
    {-0.855148435f, -0.200163394f, -0.433874339f, -0.288828164f, -0.840928555f, 0.380719095f, -0.869515598f},
};

// Golden parameters after each of 5 steps, from PyTorch itself: produced by
// /usr/bin/python3 tests/engine/optimizer_goldens.py (Debian's python3-torch, torch 1.13)
// and pasted above; the script holds the PyTorch constructor calls these options mirror.
TEST(Optimizer, MatchesPyTorchGoldens) {
  struct Golden {
    std::string name, optimizer;
    OptimizerOptions options;
    const float (*expected)[7];
  };
  std::vector<Golden> goldens;
  OptimizerOptions o;
  o.learning_rate = 0.1f;
  goldens.push_back({"sgd_plain", "sgd", o, golden_sgd_plain});
  o.learning_rate = 0.05f;
  o.momentum = 0.9f;
  o.dampening = 0.25f;
  o.weight_decay = 0.01f;
  goldens.push_back({"sgd_momentum_dampening_wd", "sgd", o, golden_sgd_momentum_dampening_wd});
  o.dampening = 0.0f;
  o.nesterov = true;
  o.weight_decay = 0.02f;
  goldens.push_back({"sgd_nesterov_wd", "sgd", o, golden_sgd_nesterov_wd});
  OptimizerOptions a;
  a.learning_rate = 0.01f;
  a.beta1 = 0.8f;
  a.beta2 = 0.95f;
  a.epsilon = 1e-6f;
  a.weight_decay = 0.1f;
  goldens.push_back({"adam_wd", "adam", a, golden_adam_wd});
  OptimizerOptions d;
  d.learning_rate = 0.01f;
  goldens.push_back({"adamw_default_wd", "adamw", d, golden_adamw_default_wd});
  OptimizerOptions w;
  w.learning_rate = 0.02f;
  w.beta1 = 0.9f;
  w.beta2 = 0.99f;
  w.epsilon = 1e-8f;
  w.weight_decay = 0.1f;
  goldens.push_back({"adamw_wd", "adamw", w, golden_adamw_wd});

  for (const Golden& g : goldens) {
    std::vector<float> params(golden_initial, golden_initial + 7);
    std::vector<float> grads(7);
    auto optimizer = make_optimizer(g.optimizer, g.options, params, grads);
    for (int step = 0; step < 5; ++step) {
      std::copy(golden_gradients[step], golden_gradients[step] + 7, grads.begin());
      optimizer->step();
      expect_relative(params, std::vector<float>(g.expected[step], g.expected[step] + 7), 1e-6,
                      g.name + " step " + std::to_string(step + 1));
    }
  }
}

TEST(Optimizer, StateExportImportContinuesBitwise) {
  for (const Case& c : reference_cases()) {
    const std::size_t n = 37;
    std::vector<float> params = random_vector(n, 5, 1.0f);
    std::vector<float> grads(n);
    auto original = make_optimizer(c.optimizer, c.options, params, grads);
    for (int step = 0; step < 3; ++step) {
      fill(grads, random_vector(n, 50 + static_cast<std::size_t>(step), 0.5f));
      original->step();
    }
    // What a checkpoint stores: the parameter block, each named state block, the step.
    std::vector<float> saved_params = params;
    std::vector<std::vector<float>> saved_state;
    std::vector<ConstOptimizerStateView> views;
    for (const OptimizerStateView& view : original->state_tensors()) {
      EXPECT_EQ(view.values.size(), n) << c.name << " " << view.name;
      saved_state.emplace_back(view.values.begin(), view.values.end());
    }
    const auto names = original->state_names();
    for (std::size_t i = 0; i < names.size(); ++i) views.push_back({names[i], saved_state[i]});

    std::vector<float> restored_params = saved_params;
    std::vector<float> restored_grads(n);
    auto restored = make_optimizer(c.optimizer, c.options, restored_params, restored_grads);
    // Hand the tensors over in reverse order: names, not positions, identify them.
    std::vector<ConstOptimizerStateView> reversed(views.rbegin(), views.rend());
    restored->import_state(original->step_count(), reversed);
    EXPECT_EQ(restored->step_count(), 3);

    for (int step = 3; step < 7; ++step) {
      fill(grads, random_vector(n, 50 + static_cast<std::size_t>(step), 0.5f));
      fill(restored_grads, grads);
      original->step();
      restored->step();
    }
    EXPECT_EQ(std::memcmp(params.data(), restored_params.data(), n * sizeof(float)), 0) << c.name;
    const auto a = std::as_const(*original).state_tensors();
    const auto b = std::as_const(*restored).state_tensors();
    ASSERT_EQ(a.size(), b.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].name, b[i].name);
      EXPECT_EQ(std::memcmp(a[i].values.data(), b[i].values.data(), n * sizeof(float)), 0) << c.name << " " << a[i].name;
    }
  }
}

TEST(Optimizer, StateNames) {
  std::vector<float> params(4), grads(4);
  OptimizerOptions o;
  EXPECT_TRUE(make_optimizer("sgd", o, params, grads)->state_names().empty());
  o.momentum = 0.5f;
  EXPECT_EQ(make_optimizer("sgd", o, params, grads)->state_names(), std::vector<std::string>{"momentum_buffer"});
  EXPECT_EQ(make_optimizer("adam", o, params, grads)->state_names(),
            (std::vector<std::string>{"exp_avg", "exp_avg_sq"}));
  EXPECT_EQ(make_optimizer("adamw", o, params, grads)->name(), "adamw");
  // PyTorch's defaults: AdamW decays by 1e-2, Adam and SGD not at all.
  EXPECT_FLOAT_EQ(*make_optimizer("adamw", OptimizerOptions{}, params, grads)->options().weight_decay, 1e-2f);
  EXPECT_FLOAT_EQ(*make_optimizer("adam", OptimizerOptions{}, params, grads)->options().weight_decay, 0.0f);
  EXPECT_FLOAT_EQ(*make_optimizer("sgd", OptimizerOptions{}, params, grads)->options().weight_decay, 0.0f);
}

TEST(Optimizer, BadStateImportIsRefused) {
  std::vector<float> params(8), grads(8);
  auto adam = make_optimizer("adam", OptimizerOptions{}, params, grads);
  std::vector<float> good(8, 1.0f), short_block(5, 1.0f);
  std::vector<ConstOptimizerStateView> views = {{"exp_avg", good}, {"momentum_buffer", good}};
  EXPECT_EQ(error_message([&] { adam->import_state(2, views); }),
            "optimizer adam has no state tensor 'momentum_buffer'; its state tensors are: exp_avg, exp_avg_sq");
  views = {{"exp_avg", good}, {"exp_avg_sq", short_block}};
  EXPECT_EQ(error_message([&] { adam->import_state(2, views); }),
            "optimizer adam: state tensor 'exp_avg_sq' must have 8 floats (the parameter block), found 5");
  views = {{"exp_avg", good}};
  EXPECT_EQ(error_message([&] { adam->import_state(2, views); }),
            "optimizer adam: state tensor 'exp_avg_sq' is missing; expected: exp_avg, exp_avg_sq");
  views = {{"exp_avg", good}, {"exp_avg_sq", good}};
  EXPECT_EQ(error_message([&] { adam->import_state(-1, views); }), "optimizer adam: step count must be >= 0, found -1");
  // Refused imports changed nothing.
  EXPECT_EQ(adam->step_count(), 0);
  for (const auto& view : std::as_const(*adam).state_tensors()) {
    for (float v : view.values) EXPECT_EQ(v, 0.0f);
  }
}

TEST(Optimizer, BadHyperParametersAreNamed) {
  std::vector<float> params(4), grads(4), other(3);
  auto make = [&](const char* name, OptimizerOptions o) { make_optimizer(name, o, params, grads); };
  OptimizerOptions o;
  o.learning_rate = -0.1f;
  EXPECT_EQ(error_message([&] { make("sgd", o); }), "sgd: learning rate must be positive, found -0.1");
  EXPECT_EQ(error_message([&] { make("adam", o); }), "adam: learning rate must be positive, found -0.1");
  o.learning_rate = 0.0f;
  EXPECT_EQ(error_message([&] { make("adamw", o); }), "adamw: learning rate must be positive, found 0");
  o = OptimizerOptions{};
  o.beta1 = 1.0f;
  EXPECT_EQ(error_message([&] { make("adam", o); }), "adam: beta1 must be in [0, 1), found 1");
  o = OptimizerOptions{};
  o.beta2 = -0.5f;
  EXPECT_EQ(error_message([&] { make("adamw", o); }), "adamw: beta2 must be in [0, 1), found -0.5");
  o = OptimizerOptions{};
  o.epsilon = -1e-8f;
  EXPECT_EQ(error_message([&] { make("adam", o); }), "adam: epsilon must be >= 0, found -1e-08");
  o = OptimizerOptions{};
  o.weight_decay = -0.01f;
  EXPECT_EQ(error_message([&] { make("sgd", o); }), "sgd: weight decay must be >= 0, found -0.01");
  o = OptimizerOptions{};
  o.momentum = -0.9f;
  EXPECT_EQ(error_message([&] { make("sgd", o); }), "sgd: momentum must be >= 0, found -0.9");
  o = OptimizerOptions{};
  o.nesterov = true;
  EXPECT_EQ(error_message([&] { make("sgd", o); }),
            "sgd: nesterov momentum requires momentum > 0 and dampening 0, found momentum 0 and dampening 0");
  o.momentum = 0.9f;
  o.dampening = 0.1f;
  EXPECT_EQ(error_message([&] { make("sgd", o); }),
            "sgd: nesterov momentum requires momentum > 0 and dampening 0, found momentum 0.9 and dampening 0.1");
  o = OptimizerOptions{};
  o.learning_rate = std::numeric_limits<float>::infinity();
  EXPECT_EQ(error_message([&] { make("sgd", o); }), "sgd: learning rate must be finite, found inf");
  EXPECT_EQ(error_message([&] { make("rmsprop", OptimizerOptions{}); }),
            "unknown optimizer 'rmsprop'; valid optimizers: sgd, adam, adamw");
  EXPECT_EQ(error_message([&] { make_optimizer("adam", OptimizerOptions{}, params, other); }),
            "optimizer: the gradient block must match the value block, found 3 gradients for 4 values");
  auto sgd = make_optimizer("sgd", OptimizerOptions{}, params, grads);
  EXPECT_EQ(error_message([&] { sgd->set_learning_rate(-0.5f); }),
            "sgd: a scheduled learning rate must be finite and >= 0, found -0.5");
  sgd->set_learning_rate(0.0f);  // a cosine schedule may end at 0
  EXPECT_EQ(sgd->learning_rate(), 0.0f);
  EXPECT_EQ(sgd->options().learning_rate, 1e-3f);
}

// The update is split over threads by parameter ranges: any thread count gives the same
// bits, on a block long enough for 3 threads (13 chunks of 16384 floats, the last ragged).
TEST(Optimizer, StepIsBitwiseTheSameOnOneTwoAndThreeThreads) {
  for (const Case& c : reference_cases()) {
    const std::size_t n = 12 * 16384 + 1001;
    std::vector<std::vector<float>> results;
    for (int threads : {1, 2, 3}) {
      std::vector<float> params = random_vector(n, 9, 1.0f);
      std::vector<float> grads(n);
      auto optimizer = make_optimizer(c.optimizer, c.options, params, grads);
      for (int step = 0; step < 3; ++step) {
        fill(grads, random_vector(n, 90 + static_cast<std::size_t>(step), 0.5f));
        optimizer->step(threads);
      }
      results.push_back(params);
    }
    EXPECT_EQ(results[0], results[1]) << c.name;
    EXPECT_EQ(results[0], results[2]) << c.name;
    EXPECT_NE(results[0], random_vector(n, 9, 1.0f)) << c.name << ": the step changed nothing";
  }
}

}  // namespace
}  // namespace ember
