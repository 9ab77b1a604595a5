#pragma once
// Training-time image augmentation, applied to each sample of a training batch as the
// BatchLoader reads it (engine/dataset.h). The random choices of a sample come from
// (seed, epoch, sample index) alone, so a run is reproducible whatever the thread count
// and however batches are formed.
//
//   crop:P   torchvision RandomCrop(size, padding=P): zero-pad by P on every side, then
//            crop the original size at a uniformly random offset in [0, 2P] x [0, 2P]
//   flip     RandomHorizontalFlip(p=0.5); flip:Q flips with probability Q
#include <cstdint>
#include <string>

#include "engine/dataset.h"

namespace ember {

struct AugmentSpec {
  std::int64_t crop_padding = 0;  // 0: no crop
  double flip_probability = 0.0;  // 0: no flip
  bool empty() const { return crop_padding == 0 && flip_probability == 0.0; }
};

// Parses "crop:4,flip"; an empty text is no augmentation. Errors name the bad item.
AugmentSpec parse_augment_spec(const std::string& text);

class Augmenter final : public SampleAugmenter {
 public:
  Augmenter(const AugmentSpec& spec, std::uint64_t seed) : spec_(spec), seed_(seed) {}
  void apply(std::uint8_t* pixels, std::int64_t channels, std::int64_t height, std::int64_t width, int epoch,
             std::int64_t sample) const override;

 private:
  AugmentSpec spec_;
  std::uint64_t seed_;
};

}  // namespace ember
