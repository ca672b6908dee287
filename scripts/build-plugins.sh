#!/usr/bin/env bash
# Builds every proxy-wasm plugin in the repository from source and copies the modules, flat, to
# target/plugins/<name>.wasm:
#   conformance/plugins/*   Rust conformance plugins      -> rs_<name>.wasm
#   conformance/as/         AssemblyScript conformance     -> as_<name>.wasm
#   plugins/*               first-party plugins (Rust, AS) -> <name>.wasm
#   bench/plugins/*         benchmark-only plugins (Rust)  -> <name>.wasm
#   sdk/assemblyscript/     the plugin template: compiled so it cannot rot, not copied
#
# Idempotent and incremental: cargo skips unchanged crates (one shared target dir,
# target/wasm-plugins, so dependencies compile once); an AssemblyScript project is rebuilt only
# when a hash of its sources differs from the last successful build, and `npm ci` runs only when
# its package-lock.json changed. Installs the wasm32-wasip1 Rust target when it is missing.
# Needs: rustup (or a Rust with wasm32-wasip1), node >= 16 and npm. Usage:
#   scripts/build-plugins.sh            build everything
#   scripts/build-plugins.sh --rust     only the Rust plugins
#   scripts/build-plugins.sh --as       only the AssemblyScript plugins
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/target/plugins"
WASM_TARGET_DIR="$ROOT/target/wasm-plugins"
STAMPS="$WASM_TARGET_DIR/as-stamps"
TARGET=wasm32-wasip1

RUST_WORKSPACES=(conformance/plugins plugins bench/plugins)
# AssemblyScript projects (`dir:copy` or `dir:check`); `npm run build` writes build/<name>.wasm.
AS_PROJECTS=(conformance/as:copy plugins/deny-path:copy sdk/assemblyscript:check)

log() { printf 'build-plugins: %s\n' "$*" >&2; }
die() { printf 'build-plugins: error: %s\n' "$*" >&2; exit 1; }

# Copies $1 to $2 only when the contents differ, so unchanged plugins keep their mtime (the
# gateway watches plugin files and reloads on change).
install_if_changed() {
  if ! cmp -s "$1" "$2" 2>/dev/null; then
    cp "$1" "$2.tmp"
    mv "$2.tmp" "$2"
    log "updated $(basename "$2")"
  fi
}

ensure_wasm_target() {
  if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed | grep -qx "$TARGET"; then
      log "installing Rust target $TARGET"
      rustup target add "$TARGET"
    fi
  elif [ ! -d "$(rustc --print sysroot)/lib/rustlib/$TARGET" ]; then
    die "the Rust target $TARGET is missing and rustup is not installed to add it"
  fi
}

build_rust() {
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs)"
  ensure_wasm_target
  local ws
  for ws in "${RUST_WORKSPACES[@]}"; do
    [ -f "$ROOT/$ws/Cargo.toml" ] || continue
    log "cargo build $ws"
    CARGO_TARGET_DIR="$WASM_TARGET_DIR" cargo build --quiet --release --locked \
      --target "$TARGET" --manifest-path "$ROOT/$ws/Cargo.toml"
  done
  local wasm
  for ws in "${RUST_WORKSPACES[@]}"; do
    [ -f "$ROOT/$ws/Cargo.toml" ] || continue
    # The cdylib names of this workspace's crates (`[lib] name`), so stale modules of removed
    # crates in the shared target dir are never copied.
    local names
    names="$(for manifest in "$ROOT/$ws"/*/Cargo.toml; do
      awk '/^\[/{lib=($0=="[lib]")} lib && /^name *=/{gsub(/.*= *"|".*/,""); print}' "$manifest"
    done)"
    for name in $names; do
      wasm="$WASM_TARGET_DIR/$TARGET/release/$name.wasm"
      [ -f "$wasm" ] || die "cargo did not produce $wasm"
      install_if_changed "$wasm" "$OUT/$name.wasm"
    done
  done
}

check_node() {
  command -v node >/dev/null 2>&1 || die "node not found: AssemblyScript plugins need Node.js >= 16 and npm (e.g. apt-get install nodejs npm)"
  command -v npm >/dev/null 2>&1 || die "npm not found: AssemblyScript plugins need npm (e.g. apt-get install npm)"
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  [ "$major" -ge 16 ] || die "node $(node --version) is too old: AssemblyScript 0.17 builds need node >= 16"
}

# Hash of everything that determines an AssemblyScript project's output.
as_sources_hash() {
  local path present=()
  for path in assembly package.json package-lock.json build.js asconfig.json; do
    [ -e "$1/$path" ] && present+=("$path")
  done
  (cd "$1" && find "${present[@]}" -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)
}

build_as_project() {
  local dir="$ROOT/$1" mode="$2" key hash lock_hash
  [ -f "$dir/package.json" ] || return 0
  key="$(printf '%s' "$1" | tr '/' '_')"
  hash="$(as_sources_hash "$dir")"
  if [ -f "$STAMPS/$key.src" ] && [ "$(cat "$STAMPS/$key.src")" = "$hash" ] && [ -d "$dir/build" ]; then
    log "$1 unchanged"
  else
    lock_hash="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
    if [ ! -d "$dir/node_modules" ] || [ "$(cat "$STAMPS/$key.lock" 2>/dev/null)" != "$lock_hash" ]; then
      log "npm ci $1"
      (cd "$dir" && npm ci --no-audit --no-fund --silent)
      printf '%s' "$lock_hash" > "$STAMPS/$key.lock"
    fi
    log "asc $1"
    rm -rf "$dir/build"
    (cd "$dir" && npm run --silent build)
    printf '%s' "$hash" > "$STAMPS/$key.src"
  fi
  local wasm
  for wasm in "$dir"/build/*.wasm; do
    [ -f "$wasm" ] || die "$1 produced no .wasm in build/"
    [ "$mode" = copy ] && install_if_changed "$wasm" "$OUT/$(basename "$wasm")"
  done
  return 0
}

build_as() {
  check_node
  local project
  for project in "${AS_PROJECTS[@]}"; do
    build_as_project "${project%%:*}" "${project##*:}"
  done
}

# Every module must declare a proxy-wasm ABI version, or no host will load it.
verify_outputs() {
  command -v node >/dev/null 2>&1 || return 0
  node -e '
    const fs = require("fs"), path = require("path");
    let bad = 0;
    for (const f of fs.readdirSync(process.argv[1]).filter(f => f.endsWith(".wasm"))) {
      const m = new WebAssembly.Module(fs.readFileSync(path.join(process.argv[1], f)));
      const abi = WebAssembly.Module.exports(m).map(e => e.name).filter(n => n.startsWith("proxy_abi_version_"));
      if (abi.length !== 1) { console.error("build-plugins: error: " + f + " exports " + abi.length + " proxy_abi_version_* functions"); bad++; }
    }
    process.exit(bad ? 1 : 0);
  ' "$OUT"
}

main() {
  local rust=1 as=1
  case "${1:-}" in
    "") ;;
    --rust) as=0 ;;
    --as) rust=0 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  mkdir -p "$OUT" "$STAMPS"
  [ "$rust" = 1 ] && build_rust
  [ "$as" = 1 ] && build_as
  verify_outputs
  log "plugins in ${OUT#"$ROOT"/}: $(cd "$OUT" && ls -- *.wasm | tr '\n' ' ')"
}

main "$@"
