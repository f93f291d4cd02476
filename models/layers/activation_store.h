// What a forward pass keeps for its backward: per layer, named activations. Inference passes no
// store (a null pointer) and pays nothing; a training step gives the forward a store, and the
// backward of each layer reads what the forward of that layer saved.
//
// Two policies, as Megatron's activation recomputation offers them:
//   kEverything   every intermediate a layer's backward reads (the most memory, no recompute);
//   kLayerInputs  only each layer's input (the backward recomputes the layer's forward from it:
//                 one extra forward, activation memory of one layer plus the inputs).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>

#include "runtime/tensor.h"

namespace gemmapod {

class ActivationStore {
 public:
  enum class Keep { kEverything, kLayerInputs };

  explicit ActivationStore(Keep keep = Keep::kEverything) : keep_(keep) {}

  Keep keep() const { return keep_; }

  // Saves a copy of `t` (the forward reuses its buffers) as layer `layer`'s `name`. A layer's
  // input is saved under kInput under every policy; its other activations only under
  // kEverything. Saving a name twice replaces it.
  void Save(int64_t layer, std::string_view name, const Tensor& t);
  // What was saved; throws naming the layer and the activation when it was not.
  const Tensor& Get(int64_t layer, std::string_view name) const;
  bool Has(int64_t layer, std::string_view name) const;
  // Bytes of every saved tensor, and how many there are.
  int64_t bytes() const;
  int64_t size() const { return static_cast<int64_t>(saved_.size()); }
  void Clear() { saved_.clear(); }

  static constexpr std::string_view kInput = "input";

 private:
  Keep keep_;
  std::map<std::pair<int64_t, std::string>, Tensor, std::less<>> saved_;
};

// Saves into `store` when there is one: the layers' forwards call this with the store they were
// given, which is null for inference.
inline void SaveActivation(ActivationStore* store, int64_t layer, std::string_view name,
                           const Tensor& t) {
  if (store != nullptr) store->Save(layer, name, t);
}

}  // namespace gemmapod
