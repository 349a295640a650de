// Private helpers shared by the config visitors (config.cpp, config_io.cpp).
#pragma once

#include <filesystem>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <vector>

namespace salad::config::detail {

/// A no-op visitor used only to detect whether T has `template <class V> void visit(V&)`.
struct ProbeVisitor {
  template <class T>
  void operator()(const char*, T&, const char*, unsigned = 0) {}
  void choice(const char*, std::string&, std::initializer_list<const char*>, const char*,
              unsigned = 0) {}
};

template <class T, class = void>
struct is_section : std::false_type {};
template <class T>
struct is_section<T, std::void_t<decltype(std::declval<T&>().visit(std::declval<ProbeVisitor&>()))>>
    : std::true_type {};

template <class T>
struct is_vector : std::false_type {};
template <class T>
struct is_vector<std::vector<T>> : std::true_type {
  using element = T;
};

/// The type as a reader of a recipe would name it.
template <class T>
std::string type_name() {
  if constexpr (std::is_same_v<T, bool>) {
    return "boolean";
  } else if constexpr (std::is_integral_v<T>) {
    return "integer";
  } else if constexpr (std::is_floating_point_v<T>) {
    return "number";
  } else if constexpr (std::is_same_v<T, std::filesystem::path>) {
    return "path";
  } else if constexpr (std::is_same_v<T, std::string>) {
    return "string";
  } else if constexpr (is_vector<T>::value) {
    return "list of " + type_name<typename is_vector<T>::element>();
  } else {
    static_assert(is_section<T>::value, "unsupported config field type");
    return "mapping";
  }
}

}  // namespace salad::config::detail
