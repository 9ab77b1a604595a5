#!/usr/bin/env bash
# Installs a build tree into a temporary prefix and builds the README's embedding example
# against the install, as a user would: (a) cc with pkg-config, (b) a CMake project with
# find_package(ember). Both binaries run on a checkpoint made by the installed `ember`
# CLI and must print a prediction. Also compiles every installed C++ header, and runs the
# build's embed_example on an IDX file.
#
#   check_install.sh BUILD_DIR SOURCE_DIR EMBED_EXAMPLE
#
# CC and CFLAGS (the build's, e.g. sanitizer flags) are used for the compiles. When the
# build made the Python module, PYTHON (its interpreter) imports it from the install.
set -euo pipefail

build=$1 source=$2 embed_example=$3
cc=${CC:-cc}
read -r -a cflags <<<"${CFLAGS:-}"
work=$(mktemp -d "${TMPDIR:-/tmp}/ember-install-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

step() { echo "== $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

step "install into $prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log" || { cat "$work/install.log" >&2; fail "cmake --install"; }
pc=$(find "$prefix" -name ember.pc -print -quit)
[[ -n $pc ]] || fail "no ember.pc installed"
libdir=$(dirname "$(dirname "$pc")")
# A static libember (-DBUILD_SHARED_LIBS=OFF) needs its private dependencies at link time,
# and a C++ link: pkg-config --static, and CXX enabled in the CMake project.
pkg_config_static='' languages='C'
if [[ ! -e $libdir/libember.so ]]; then pkg_config_static=--static languages='C CXX'; fi
[[ -f $prefix/include/ember.h ]] || fail "include/ember.h not installed"
[[ -x $prefix/bin/ember ]] || fail "bin/ember not installed"

step "extract the README example"
sed -n '/<!-- embed-example:begin -->/,/<!-- embed-example:end -->/p' "$source/README.md" |
  sed -e '/^<!--/d' -e '/^```/d' >"$work/embed.c"
grep -q 'ember_session_run' "$work/embed.c" || fail "README.md has no embed-example block calling ember_session_run"

step "make a checkpoint with the installed CLI (seed-cnn, one epoch on 32 blank images)"
data=$work/data
mkdir -p "$data"
be32() {  # a 32-bit big-endian number, as bytes
  # shellcheck disable=SC2059  # the format is the bytes, as octal escapes
  printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 >> 24 & 255)) $(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)))"
}
idx() {  # idx FILE COUNT [ROWS COLUMNS]: an IDX file of zero bytes (blank images, or labels of class 0)
  local file=$1 count=$2
  if (($# == 4)); then
    { printf '\000\000\010\003'; be32 "$count"; be32 "$3"; be32 "$4"; head -c $((count * $3 * $4)) /dev/zero; } >"$file"
  else
    { printf '\000\000\010\001'; be32 "$count"; head -c "$count" /dev/zero; } >"$file"
  fi
}
for split in train t10k; do
  idx "$data/$split-images-idx3-ubyte" 32 28 28
  idx "$data/$split-labels-idx1-ubyte" 32
done
checkpoint=$work/seed-cnn.safetensors
"$prefix/bin/ember" train --model seed-cnn --data "$data" --epochs 1 --batch-size 16 --threads 1 --save "$checkpoint" \
  >"$work/train.log" 2>&1 || { cat "$work/train.log" >&2; fail "ember train (installed CLI)"; }

expect_prediction() {  # expect_prediction NAME BINARY
  local output
  output=$(LD_LIBRARY_PATH=$libdir "$2" "$checkpoint") || fail "$1 failed: $output"
  [[ $output =~ ^predicted\ class\ [0-9]$ ]] || fail "$1 printed '$output', expected 'predicted class <0-9>'"
  echo "$1: $output"
}

step "(a) cc \$(pkg-config --cflags --libs ember)"
flags=$(PKG_CONFIG_PATH=$libdir/pkgconfig pkg-config $pkg_config_static --cflags --libs ember) || fail "pkg-config ember"
# shellcheck disable=SC2086  # pkg-config output is a list of words
"$cc" -std=c11 -Wall -Wextra -Werror "${cflags[@]}" "$work/embed.c" $flags -o "$work/embed_pkg_config" ||
  fail "the README example does not compile with pkg-config's flags ($flags)"
expect_prediction "pkg-config build" "$work/embed_pkg_config"

step "(b) find_package(ember) in a CMake project"
mkdir -p "$work/project"
cp "$work/embed.c" "$work/project/embed.c"
cat >"$work/project/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.25)
project(embed LANGUAGES $languages)
find_package(ember 0.1 REQUIRED)
add_executable(embed embed.c)
target_compile_options(embed PRIVATE -Wall -Wextra -Werror)
target_link_libraries(embed PRIVATE ember::ember)
EOF
cmake -S "$work/project" -B "$work/project/build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$cc" \
  -DCMAKE_C_FLAGS="${CFLAGS:-}" >"$work/cmake.log" 2>&1 || { cat "$work/cmake.log" >&2; fail "find_package(ember)"; }
cmake --build "$work/project/build" >>"$work/cmake.log" 2>&1 || { cat "$work/cmake.log" >&2; fail "the CMake build"; }
expect_prediction "find_package build" "$work/project/build/embed"

step "the installed C++ headers compile on their own (engine/session.h and what it includes)"
headers=$(cd "$prefix/include/ember" && find . -name '*.h' | sort)
[[ $headers == *engine/session.h* ]] || fail "include/ember/engine/session.h not installed"
for header in $headers; do echo "#include \"${header#./}\""; done >"$work/headers.cpp"
# shellcheck disable=SC2046  # pkg-config output is a list of words
c++ -std=c++20 -fsyntax-only $(PKG_CONFIG_PATH=$libdir/pkgconfig pkg-config --cflags ember) "$work/headers.cpp" ||
  fail "the installed C++ headers do not compile"

step "tools/embed_example on an IDX file"
output=$("$embed_example" "$checkpoint" "$data/t10k-images-idx3-ubyte") || fail "embed_example failed: $output"
[[ $(grep -c '^image [0-9]: class [0-9] (logit ' <<<"$output") == 8 ]] || fail "embed_example printed: $output"
echo "$output" | head -2

step "import ember from the install (when the Python module was built)"
package=$(find "$prefix" -path '*/ember/__init__.py' -print -quit)
if [[ -n $package ]]; then
  [[ -n ${PYTHON:-} ]] || fail "the install has a Python package but PYTHON (the build's interpreter) is not set"
  output=$(PYTHONPATH=$(dirname "$(dirname "$package")") "$PYTHON" -c "
import sys, numpy, ember
session = ember.Session(sys.argv[1])
print('python: class', int(session.run(numpy.zeros((1, *session.input_shape), numpy.float32)).argmax()))
" "$checkpoint") || fail "import ember from $(dirname "$package"): $output"
  echo "$output"
else
  echo "(no Python package installed: built with EMBER_PYTHON off or without pybind11)"
fi

echo "PASS"
