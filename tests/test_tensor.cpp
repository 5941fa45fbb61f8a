// Tests of Tensor and Shape on every backend: creation, host round trips, copies, reshape views.
// Not op tests: those live with each op.
#include <cstring>

#include "evo/error.h"
#include "evo/tensor.h"
#include "support.h"

using namespace evo;

TEST_CASE("Shape counts, prints and rejects bad dimensions", "[tensor]") {
  const Shape s{50, 32, 32, 16};
  CHECK(s.rank() == 4);
  CHECK(s.numel() == 50 * 32 * 32 * 16);
  CHECK(s.str() == "[50, 32, 32, 16]");
  CHECK(Shape{}.numel() == 1);
  CHECK_THROWS_AS(Shape({1, 2, 3, 4, 5}), Error);
  CHECK_THROWS_AS(Shape({3, -1}), Error);
  CHECK(Shape{2, 3} == Shape{2, 3});
  CHECK_FALSE(Shape{2, 3} == Shape{3, 2});
}

TEST_CASE("Tensors round-trip random values through every backend", "[tensor]") {
  for (Device dev : test::test_devices()) {
    DYNAMIC_SECTION(dev.str()) {
      const Shape shape{3, 5, 7, 11};  // odd sizes catch stride bugs
      const std::vector<float> values = test::random_vector(std::size_t(shape.numel()));
      const Tensor t = Tensor::from_host(values, shape, dev);
      CHECK(t.device() == dev);
      CHECK(t.shape() == shape);
      CHECK(t.bytes() == values.size() * 4);
      CHECK(t.to_host() == values);

      // Device-to-device copy into a tensor poisoned first, so an unwritten element shows.
      Tensor u = Tensor::from_host(std::vector<float>(values.size(), NAN), shape, dev);
      u.copy_from(t);
      CHECK(u.to_host() == values);
      CHECK(u.raw() != t.raw());

      // To another device and back.
      const Tensor back = t.to(Device::cpu()).to(dev);
      CHECK(back.to_host() == values);

      const Tensor z = Tensor::zeros({4, 9}, dev);
      CHECK(z.to_host() == std::vector<float>(36, 0.0f));
    }
  }
}

TEST_CASE("reshape is a view with the same element count", "[tensor]") {
  for (Device dev : test::test_devices()) {
    DYNAMIC_SECTION(dev.str()) {
      const std::vector<float> values = test::random_vector(60);
      const Tensor t = Tensor::from_host(values, {3, 4, 5}, dev);
      const Tensor r = t.reshape({12, 5});
      CHECK(r.shape() == Shape{12, 5});
      CHECK(r.raw() == t.raw());
      CHECK(r.to_host() == values);
      CHECK_THROWS_WITH(t.reshape({7, 9}), Catch::Contains("cannot reshape [3, 4, 5]"));
    }
  }
}

TEST_CASE("Tensor rejects mismatched copies, wrong dtypes and undefined use", "[tensor]") {
  const Tensor a = Tensor::from_host(test::random_vector(6), {2, 3}, Device::cpu());
  Tensor b = Tensor::empty({3, 2}, Device::cpu());
  CHECK_THROWS_WITH(b.copy_from(a), Catch::Contains("does not match"));
  CHECK_THROWS_AS(a.data<uint16_t>(), Error);
  const Tensor h = Tensor::empty({4}, Device::cpu(), DType::BF16);
  CHECK(h.bytes() == 8);
  CHECK_THROWS_AS(h.data<float>(), Error);
  CHECK_THROWS_WITH(Tensor().raw(), Catch::Contains("undefined"));
  CHECK_THROWS_AS(Tensor::from_host({1.f, 2.f}, {3}, Device::cpu()), Error);
}

TEST_CASE("Asking for a CUDA tensor without a GPU is a clear error", "[tensor]") {
  if (discover_gpus().count > 0) return;  // only meaningful on GPU-less machines
  CHECK_THROWS_AS(Tensor::empty({4}, Device::cuda(0)), Error);
}
