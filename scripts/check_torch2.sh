#!/usr/bin/env bash
# check_torch2.sh - compile check of the project against the LibTorch 2.x headers.
#
# The project builds against Debian bookworm's libtorch-dev (LibTorch 1.13). This script fetches
# Debian trixie's libtorch-dev (LibTorch 2.6) into a private cache, WITHOUT installing anything and
# without touching the system's apt state, and then runs `g++ -fsyntax-only` on every source file
# under src/, apps/ and tests/ with the flags CMake recorded in compile_commands.json, but with the
# 2.6 headers in place of the 1.13 ones. Nothing is linked; only "does it compile" is checked.
#
# Usage: scripts/check_torch2.sh [options] [BUILD_DIR]
#   BUILD_DIR             CMake build dir holding compile_commands.json
#                         (default: $SALAD_BUILD_DIR, else <project>/build)
#   -j N                  parallel compile jobs (default: $SALAD_TORCH2_JOBS, else nproc)
#   --refresh             re-run apt-get update and re-download/unpack the packages
#   --fetch-only          only make sure the 2.6 headers are in the cache, compile nothing
#   -v, --verbose         print each rewritten compile command
#   -h, --help            this text
#
# Environment:
#   SALAD_TORCH2_DIR        cache folder (default: $HOME/.cache/salad/torch2)
#   SALAD_BUILD_DIR         build dir (see above)
#   SALAD_TORCH2_JOBS       parallel jobs
#   SALAD_TORCH2_CXX        compiler (default: g++)
#   SALAD_TORCH2_MIRROR     Debian mirror (default: http://deb.debian.org/debian)
#   SALAD_TORCH2_SUITE      suite to take libtorch-dev from (default: trixie)
#   SALAD_TORCH2_EXTRA_PKGS extra -dev packages of that suite to unpack next to libtorch-dev,
#                           space separated (default: none; the 2.6 headers reached from
#                           <torch/torch.h> and <torch/script.h> only need libc/libstdc++)
#   SALAD_TORCH2_PCH        text (default): a target's CMake precompiled header is included as
#                           plain text (as the real build sees it, but never the 1.13 .gch);
#                           drop: the PCH -include is removed, each file must include what it uses
#   SALAD_TORCH2_EXTRA_FLAGS extra compiler flags appended to every command
#
# Exit status: 0 if every file compiles, 1 if any fails, 2 on setup/usage errors.
set -euo pipefail

prog=check_torch2
die() { echo "$prog: error: $*" >&2; exit 2; }
note() { echo "$prog: $*" >&2; }

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project_dir=$(cd "$script_dir/.." && pwd)

# ---------------------------------------------------------------------------- options
jobs=${SALAD_TORCH2_JOBS:-$(nproc 2>/dev/null || echo 2)}
refresh=0
fetch_only=0
verbose=0
build_dir=${SALAD_BUILD_DIR:-}
while (($#)); do
  case $1 in
    -j) [[ $# -ge 2 ]] || die "-j needs a number"; jobs=$2; shift 2 ;;
    -j*) jobs=${1#-j}; shift ;;
    --refresh) refresh=1; shift ;;
    --fetch-only) fetch_only=1; shift ;;
    -v|--verbose) verbose=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) build_dir=$1; shift ;;
  esac
done
[[ $jobs =~ ^[1-9][0-9]*$ ]] || die "bad job count '$jobs'"

cache=${SALAD_TORCH2_DIR:-$HOME/.cache/salad/torch2}
mirror=${SALAD_TORCH2_MIRROR:-http://deb.debian.org/debian}
suite=${SALAD_TORCH2_SUITE:-trixie}
cxx=${SALAD_TORCH2_CXX:-g++}
pch_mode=${SALAD_TORCH2_PCH:-text}
[[ $pch_mode == text || $pch_mode == drop ]] || die "SALAD_TORCH2_PCH must be 'text' or 'drop'"
read -r -a extra_pkgs <<<"${SALAD_TORCH2_EXTRA_PKGS:-}"
pkgs=(libtorch-dev "${extra_pkgs[@]}")

for tool in apt-get dpkg-deb python3 flock xargs "$cxx"; do
  command -v "$tool" >/dev/null || die "'$tool' not found"
done

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
root=$cache/root                # unpacked packages (root/usr/include/{ATen,c10,torch,...})
stamp=$root/.salad-torch2-stamp  # which packages (and versions) root/ holds
t2inc=$root/usr/include
t2api=$t2inc/torch/csrc/api/include

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------------------- private apt
# Every apt path is redirected into $cache/apt, so `apt-get update` / `apt-get download` neither
# read nor write /etc/apt, /var/lib/apt or /var/cache/apt. Dir::Etc::Parts points at an empty dir
# so the system's apt.conf.d hooks (e.g. docker-clean or packagekit Post-Invoke) are not run.
# Apt reads $APT_CONFIG before apt.conf.d, so this file decides where everything else comes from.
apt_conf_for() { # <name> <sources.list line...>  -> prints the path of an apt.conf for it
  local name=$1 d; shift
  d=$cache/apt/$name
  mkdir -p "$d/etc/apt.conf.d" "$d/etc/sources.list.d" "$d/etc/preferences.d" \
    "$d/etc/trusted.gpg.d" "$d/etc/auth.conf.d" "$d/state/lists/partial" \
    "$d/cache/archives/partial" "$d/log"
  : >"$d/state/status"
  printf '%s\n' "$@" >"$d/etc/sources.list"
  {
    echo "Dir::Etc \"$d/etc\";"
    echo "Dir::Etc::main \"/dev/null\";"
    echo "Dir::Etc::Parts \"$d/etc/apt.conf.d\";"
    echo "Dir::Etc::SourceList \"$d/etc/sources.list\";"
    echo "Dir::Etc::SourceParts \"$d/etc/sources.list.d\";"
    echo "Dir::Etc::Preferences \"/dev/null\";"
    echo "Dir::Etc::PreferencesParts \"$d/etc/preferences.d\";"
    echo "Dir::Etc::Trusted \"/dev/null\";"
    echo "Dir::Etc::TrustedParts \"$d/etc/trusted.gpg.d\";"
    echo "Dir::Etc::netrc \"/dev/null\";"
    echo "Dir::Etc::netrcparts \"$d/etc/auth.conf.d\";"
    echo "Dir::State \"$d/state\";"
    echo "Dir::State::Lists \"$d/state/lists\";"
    echo "Dir::State::status \"$d/state/status\";"
    echo "Dir::Cache \"$d/cache\";"
    echo "Dir::Cache::archives \"$d/cache/archives\";"
    echo 'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";'  # 2 x 40 MB we never reuse
    echo "Dir::Log \"$d/log\";"
    echo "APT::Architecture \"amd64\";"
    echo "APT::Architectures { \"amd64\"; };"
    echo "Acquire::Languages \"none\";"
    echo "Acquire::IndexTargets::deb::DEP-11 { DefaultEnabled \"false\"; };"
    # Keep using the proxy the system's apt is configured with, if any (read-only query).
    local p
    for p in http https; do
      local v
      v=$(apt-config dump "Acquire::$p::Proxy" 2>/dev/null | sed -n "s/^Acquire::$p::Proxy \"\(.*\)\";\$/\1/p" | head -n1)
      [[ -n $v ]] && echo "Acquire::$p::Proxy \"$v\";"
    done
    # As root apt drops to the '_apt' user for downloads, which cannot enter e.g. /root/.cache;
    # download as root instead of letting apt warn about it for every file.
    if [[ $(id -u) -eq 0 ]]; then echo 'APT::Sandbox::User "root";'; fi
  } >"$d/apt.conf"
  echo "$d/apt.conf"
}

has_trixie_key() { grep -qa "Automatic Signing Key (13/trixie)" "$1" 2>/dev/null; }

# Pick a keyring that verifies $suite. Debian's keyring (bookworm's debian-archive-keyring
# >= 2023.3+deb12u2) has the trixie keys; trixie's InRelease is also co-signed by the bookworm
# archive key, so apt accepts it with an older bookworm keyring too. If the system keyring lacks
# the trixie keys, fetch bookworm's current debian-archive-keyring package (verified with the
# system keyring) and use its keyring.
pick_keyring() {
  local sys=/usr/share/keyrings/debian-archive-keyring.gpg
  [[ -r $sys ]] || die "$sys missing (apt-get install debian-archive-keyring)"
  if [[ $suite != trixie ]] || has_trixie_key "$sys"; then
    echo "$sys"; return
  fi
  note "$sys has no trixie key; fetching bookworm's current debian-archive-keyring" \
    "(verified with the system keyring)"
  local conf kr=$cache/keyring
  conf=$(apt_conf_for bookworm \
    "deb [signed-by=$sys] $mirror bookworm main" \
    "deb [signed-by=$sys] $mirror bookworm-updates main")
  APT_CONFIG=$conf apt-get -q update >&2 || die "apt-get update (bookworm, private state) failed"
  rm -rf "$kr" && mkdir -p "$kr/deb"
  (cd "$kr/deb" && APT_CONFIG=$conf apt-get -q download debian-archive-keyring >&2) ||
    die "apt-get download debian-archive-keyring failed"
  dpkg-deb -x "$kr"/deb/debian-archive-keyring_*.deb "$kr/x"
  if has_trixie_key "$kr/x/usr/share/keyrings/debian-archive-keyring.gpg"; then
    echo "$kr/x/usr/share/keyrings/debian-archive-keyring.gpg"; return
  fi
  # Last resort, not taken automatically: apt accepts the system keyring as long as trixie's
  # InRelease stays co-signed with a bookworm key; if that ever fails one could write
  # "deb [trusted=yes] ..." above, which turns signature checking OFF (only the HTTP
  # transport would stand between us and a tampered package). We do not do that silently.
  note "no keyring with the trixie key found; trying the system keyring anyway"
  echo "$sys"
}

fetch_torch2() {
  local t0 keyring conf debs newroot
  t0=$(now)
  keyring=$(pick_keyring)
  conf=$(apt_conf_for "$suite" "deb [signed-by=$keyring] $mirror $suite main")
  note "apt-get update ($suite, private state in $cache/apt/$suite)"
  APT_CONFIG=$conf apt-get -q update >&2 || die "apt-get update against $mirror $suite failed"
  debs=$cache/debs
  rm -rf "$debs" && mkdir -p "$debs"
  note "apt-get download ${pkgs[*]}"
  (cd "$debs" && APT_CONFIG=$conf apt-get -q download "${pkgs[@]}" >&2) ||
    die "apt-get download ${pkgs[*]} failed"
  newroot=$cache/root.new
  rm -rf "$newroot" && mkdir -p "$newroot"
  local deb
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$newroot"; done
  [[ -f $newroot/usr/include/torch/csrc/api/include/torch/version.h ]] ||
    die "libtorch-dev from $suite has no torch/csrc/api/include/torch/version.h"
  {
    echo "suite=$suite"
    echo "pkgs=${pkgs[*]}"
    for deb in "$debs"/*.deb; do
      echo "deb=$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"
    done
  } >"$newroot/.salad-torch2-stamp"
  rm -rf "$root" && mv "$newroot" "$root"
  # The unpacked tree is the cache; the .debs and the apt indexes (~60 MB) are not needed again
  # (--refresh rebuilds both).
  rm -rf "$debs" "$cache/apt"
  note "downloaded + unpacked in $(elapsed "$t0")s ($(du -sh "$root" | cut -f1) in $root)"
}

# Setup is serialised between concurrent runs sharing one cache.
exec 9>"$cache/.lock"
flock 9
if [[ $refresh -eq 1 ]] || [[ ! -f $stamp ]] ||
   [[ $(sed -n 's/^pkgs=//p' "$stamp") != "${pkgs[*]}" ]] ||
   [[ $(sed -n 's/^suite=//p' "$stamp") != "$suite" ]]; then
  fetch_torch2
else
  note "using cached headers in $root (--refresh to update)"
fi
flock -u 9

t2ver=$(sed -n 's/^#define TORCH_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)$/\2/p' "$t2api/torch/version.h" | paste -sd.)
note "LibTorch headers: $t2ver ($(sed -n 's/^deb=//p' "$stamp" | paste -sd, | sed 's/,/, /g'))"
[[ $fetch_only -eq 1 ]] && exit 0

# ---------------------------------------------------------------------------- what to compile
build_dir=${build_dir:-$project_dir/build}
[[ -d $build_dir ]] && build_dir=$(cd "$build_dir" && pwd)
ccdb=$build_dir/compile_commands.json
src_root=$project_dir
if [[ -f $build_dir/CMakeCache.txt ]]; then
  d=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build_dir/CMakeCache.txt")
  [[ -n $d && -d $d ]] && src_root=$d
fi
if [[ ! -f $ccdb ]]; then
  note "WARNING: $ccdb not found (configure with cmake first for exact flags);" \
    "using generic flags: -std=c++17 -I<project>/include -I<project>/src"
  ccdb=
fi

mkdir -p "$cache/runs"
find "$cache/runs" -mindepth 1 -maxdepth 1 -mtime +1 -exec rm -rf {} + 2>/dev/null || true
work=$(mktemp -d "$cache/runs/run.XXXXXX")
keep_work=0
cleanup() { [[ $keep_work -eq 1 ]] || rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Interface compile definitions of torch_cpu in the 1.13 (system) and 2.6 CMake packages: the
# 1.13-only ones are removed from commands that use torch and the 2.6-only ones added, so a
# file sees exactly the macros it would see when built against the 2.6 package.
iface_defs() { # <Caffe2Targets.cmake>
  [[ -f $1 ]] || return 0
  awk '/^set_target_properties\(torch_cpu PROPERTIES/ { f = 1 } f && /INTERFACE_COMPILE_DEFINITIONS/ {
         gsub(/.*INTERFACE_COMPILE_DEFINITIONS "|".*/, ""); print; exit }' "$1"
}
defs13=$(iface_defs /usr/lib/x86_64-linux-gnu/cmake/Caffe2/Caffe2Targets.cmake)
defs26=$(iface_defs "$root/usr/lib/x86_64-linux-gnu/cmake/Caffe2/Caffe2Targets.cmake")

# Turn compile_commands.json into one job per source file: $work/jobs/NNNN.argv (NUL separated
# argv) and NNNN.meta (directory, file relative to the source root, note).
mkdir -p "$work/jobs" "$work/pch"
CXX=$cxx T2INC=$t2inc T2API=$t2api SRC_ROOT=$src_root CCDB=$ccdb WORK=$work PCH_MODE=$pch_mode \
DEFS13=$defs13 DEFS26=$defs26 EXTRA_FLAGS=${SALAD_TORCH2_EXTRA_FLAGS:-} \
python3 - <<'PY'
import json, os, shlex, shutil, sys

env = os.environ
cxx, t2inc, t2api = env["CXX"], env["T2INC"], env["T2API"]
src_root, ccdb, work, pch_mode = env["SRC_ROOT"], env["CCDB"], env["WORK"], env["PCH_MODE"]
defs13 = set(filter(None, env["DEFS13"].split(";")))
defs26 = [d for d in env["DEFS26"].split(";") if d]
extra = shlex.split(env["EXTRA_FLAGS"])

SYS_TORCH = "/usr/include"
TORCH_TOPS = ("ATen", "c10", "torch", "caffe2", "kineto")

def sources():
    out = []
    for top in ("src", "apps", "tests"):
        base = os.path.join(src_root, top)
        for dp, dns, fns in os.walk(base):
            dns.sort()
            for fn in sorted(fns):
                if fn.endswith((".cpp", ".cc", ".cxx")):
                    out.append(os.path.realpath(os.path.join(dp, fn)))
    return out

def classify_incdir(path):
    """None: keep. 'drop': a LibTorch 1.13 include dir. Else: the 2.6 dir to use instead."""
    p = os.path.realpath(path)
    if p == SYS_TORCH:
        return "drop"  # searched anyway as the last system dir; must not come before 2.6
    if p.startswith(SYS_TORCH + "/torch/csrc/api/include"):
        return "drop"  # replaced by the 2.6 api dir added up front
    for top in TORCH_TOPS:
        if p == f"{SYS_TORCH}/{top}" or p.startswith(f"{SYS_TORCH}/{top}/"):
            q = t2inc + p[len(SYS_TORCH):]
            return q if os.path.isdir(q) else "drop"
    return None

pch_copies = {}
def pch_text(path):
    """Copy of a CMake PCH header without the .gch next to it (so gcc parses the text)."""
    if path not in pch_copies:
        d = os.path.join(work, "pch", str(len(pch_copies)))
        os.makedirs(d)
        pch_copies[path] = os.path.join(d, os.path.basename(path))
        shutil.copyfile(path, pch_copies[path])
    return pch_copies[path]

def is_pch(path, directory):
    p = os.path.join(directory, path)
    b = os.path.basename(p)
    return (b.startswith("cmake_pch") or os.path.exists(p + ".gch")
            or ("/CMakeFiles/" in p and b.endswith((".hxx", ".hpp", ".hh", ".h"))))

def rewrite(args, directory, src):
    out, uses_torch, has_std = [], False, False
    i = 0
    def nxt():
        return args[i + 1] if i + 1 < len(args) else ""
    while i < len(args):
        a = args[i]
        if i == 0:  # the compiler
            i += 1; continue
        if a in ("-o", "-MF", "-MT", "-MQ"):
            i += 2; continue
        if a in ("-c", "-MD", "-MMD", "-MP", "-Winvalid-pch", "-fpch-preprocess") or \
           a.startswith(("-o", "-MF", "-MT", "-MQ", "-fpch-", "--output")):
            i += 1; continue
        if a == "-x":  # only ever 'c++-header' for the PCH; the source is compiled as C++ anyway
            i += 2; continue
        if a == "-Xclang" and nxt() in ("-include-pch", "-include"):
            i += 4; continue
        if a == "-include" or (a.startswith("-include") and len(a) > 8 and not a.startswith("-include-")):
            hdr = nxt() if a == "-include" else a[8:]
            step = 2 if a == "-include" else 1
            if is_pch(hdr, directory):
                if pch_mode == "text":
                    out += ["-include", pch_text(os.path.join(directory, hdr))]
            else:
                out += ["-include", hdr]
            i += step; continue
        hit = None
        for opt in ("-isystem", "-idirafter", "-iquote", "-I"):
            if a == opt:
                hit = (opt, nxt(), 2); break
            if a.startswith(opt) and not (opt == "-I" and a == "-I-"):
                hit = (opt, a[len(opt):], 1); break
        if hit:
            opt, d, step = hit
            c = classify_incdir(os.path.join(directory, d))
            if c is None:
                out += [opt, d]
            else:
                uses_torch = True
                if c != "drop":
                    out += [opt, c]
            i += step; continue
        if a.startswith("-D"):
            name = (a[2:] if a != "-D" else nxt()).split("=", 1)[0]
            if name in defs13 and name not in defs26:
                i += 1 if a != "-D" else 2; continue
        if a.startswith("-std="):
            has_std = True
        if os.path.realpath(os.path.join(directory, a)) == src:
            i += 1; continue
        out.append(a)
        i += 1
    if uses_torch:
        have = {x[2:].split("=", 1)[0] for x in out if x.startswith("-D")}
        out += ["-D" + d for d in defs26 if d.split("=", 1)[0] not in have]
    if not has_std:
        out.insert(0, "-std=c++17")
    # The 2.6 dirs go first: -isystem dirs are searched after the project's -I dirs and before
    # the standard system dirs, i.e. before /usr/include where bookworm's 1.13 headers live.
    return ["-isystem", t2inc, "-isystem", t2api] + out + extra

entries = {}
if ccdb:
    with open(ccdb) as f:
        for e in json.load(f):
            d = e.get("directory", ".")
            fpath = os.path.realpath(os.path.join(d, e["file"]))
            args = e.get("arguments") or shlex.split(e["command"])
            entries.setdefault(fpath, (d, args))

def borrow(src):
    """Flags for a file CMake does not compile: those of the entry sharing the longest path."""
    best, bl = None, -1
    for f in entries:
        l = len(os.path.commonpath([f, src]))
        if l > bl:
            best, bl = f, l
    return best

generic = (src_root, [cxx, "-std=c++17", "-I" + os.path.join(src_root, "include"),
                      "-I" + os.path.join(src_root, "src"), "-D_GLIBCXX_USE_CXX11_ABI=1",
                      "-isystem", SYS_TORCH + "/torch/csrc/api/include"])
n = 0
for src in sources():
    rel = os.path.relpath(src, src_root)
    note = ""
    if src in entries:
        d, args = entries[src]
    elif entries:
        b = borrow(src)
        d, args = entries[b]
        note = "not in compile_commands.json; flags of " + os.path.relpath(b, src_root)
    else:
        d, args = generic
        note = "" if not ccdb else "compile_commands.json is empty; generic flags"
    argv = [cxx] + rewrite(args, d, src) + [
        "-fsyntax-only", "-fdiagnostics-color=never", "-MD", "-MF",
        os.path.join(work, "jobs", "%04d.d" % n), src]
    with open(os.path.join(work, "jobs", "%04d.argv" % n), "wb") as f:
        f.write(b"".join(x.encode() + b"\0" for x in argv))
    with open(os.path.join(work, "jobs", "%04d.meta" % n), "w") as f:
        f.write(f"{d}\n{rel}\n{note}\n")
    n += 1
PY

mapfile -t job_ids < <(find "$work/jobs" -name '*.argv' -printf '%f\n' | sed 's/\.argv$//' | sort)
[[ ${#job_ids[@]} -gt 0 ]] || die "no .cpp files under $src_root/{src,apps,tests}"

if [[ $verbose -eq 1 ]]; then
  for id in "${job_ids[@]}"; do
    mapfile -d '' -t argv <"$work/jobs/$id.argv"
    echo "cd $(printf '%q' "$(sed -n 1p "$work/jobs/$id.meta")") && $(printf '%q ' "${argv[@]}")"
  done
fi

# ---------------------------------------------------------------------------- self-test
# With the flags of the first job, <torch/version.h> must come from the 2.6 tree.
mapfile -d '' -t argv <"$work/jobs/${job_ids[0]}.argv"
dir0=$(sed -n 1p "$work/jobs/${job_ids[0]}.meta")
argv0=()  # argv minus forced includes (the PCH would make this slow) ...
for ((i = 0; i < ${#argv[@]}; i++)); do
  if [[ ${argv[i]} == -include ]]; then i=$((i + 1)); else argv0+=("${argv[i]}"); fi
done
unset argv
printf '%s\n' '#include <torch/version.h>' \
  '#if !(TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 6)' \
  '#error "torch/version.h is not LibTorch >= 2.6"' '#endif' >"$work/selftest.cpp"
# argv0 minus its trailing "-fsyntax-only ... -MD -MF <dep> <src>" (6 items).
if ! (cd "$dir0" && "${argv0[@]:0:${#argv0[@]}-6}" -fsyntax-only -MD -MF "$work/selftest.d" \
        "$work/selftest.cpp") >"$work/selftest.log" 2>&1 ||
   ! grep -qF "$t2api/torch/version.h" "$work/selftest.d"; then
  cat "$work/selftest.log" >&2
  die "self-test failed: <torch/version.h> does not resolve to $t2api"
fi

# ---------------------------------------------------------------------------- compile
# One job per file, $jobs at a time. A job records OK/FAIL, its time and its log; it always
# exits 0 so that xargs runs all of them.
compile_one() {
  local id=$1 dir rel t0 rc=0 leaks
  dir=$(sed -n 1p "$work/jobs/$id.meta")
  rel=$(sed -n 2p "$work/jobs/$id.meta")
  local -a argv
  mapfile -d '' -t argv <"$work/jobs/$id.argv"
  t0=$(date +%s.%N)
  (cd "$dir" && "${argv[@]}") >"$work/jobs/$id.log" 2>&1 || rc=$?
  # A header that 2.6 no longer ships is silently found in bookworm's /usr/include (1.13),
  # which is always searched; the dependency list exposes that.
  leaks=$(tr ' ' '\n' <"$work/jobs/$id.d" 2>/dev/null |
          grep -E '^/usr/include/(ATen|c10|torch|caffe2|kineto)/' | sort -u || true)
  if [[ -n $leaks ]]; then
    {
      echo "error: uses LibTorch 1.13 header(s) that the 2.6 headers no longer have" \
           "(found in the system /usr/include instead):"
      echo "  ${leaks//$'\n'/$'\n'  }"
    } >>"$work/jobs/$id.log"
    [[ $rc -ne 0 ]] || rc=99
  fi
  local secs warns
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  warns=$(grep -c ': warning:' "$work/jobs/$id.log" || true)
  if [[ $rc -eq 0 ]]; then
    echo "OK $secs" >"$work/jobs/$id.status"
    local w=""
    [[ $warns -eq 0 ]] || w=" ($warns warnings)"
    printf '  ok    %-50s %5ss%s\n' "$rel" "$secs" "$w"
  else
    echo "FAIL $secs" >"$work/jobs/$id.status"
    printf '  FAIL  %-50s %5ss\n' "$rel" "$secs"
  fi
}
export -f compile_one
export work

note "compiling ${#job_ids[@]} files against LibTorch $t2ver headers ($jobs jobs; sources: $src_root," \
  "flags: ${ccdb:-generic})"
t_all=$(now)
# shellcheck disable=SC2016  # $1 is for the inner bash
printf '%s\0' "${job_ids[@]}" | xargs -0 -n 1 -P "$jobs" bash -c 'compile_one "$1"' _
wall=$(elapsed "$t_all")

ok=0 failed=0 cpu=0
failed_ids=()
for id in "${job_ids[@]}"; do
  st=FAIL secs=0
  [[ ! -f $work/jobs/$id.status ]] || read -r st secs <"$work/jobs/$id.status"
  cpu=$(awk -v a="$cpu" -v b="$secs" 'BEGIN { print a + b }')
  if [[ $st == OK ]]; then ok=$((ok + 1)); else failed=$((failed + 1)); failed_ids+=("$id"); fi
  n=$(sed -n 3p "$work/jobs/$id.meta")
  [[ -z $n ]] || note "note: $(sed -n 2p "$work/jobs/$id.meta"): $n"
done

for id in "${failed_ids[@]}"; do
  rel=$(sed -n 2p "$work/jobs/$id.meta")
  log=$work/jobs/$id.log
  echo
  echo "---- $rel ----"
  # The first error lines (plus the header list of a 1.13-header error).
  { grep -E '(: error:|^error:|: fatal error:|^  /usr/include/)' "$log" || true; } | head -n 8
  nerr=$(grep -cE ': (fatal )?error:|^error:' "$log" || true)
  echo "($nerr error(s); full log: $log)"
done
((failed == 0)) || keep_work=1

echo
note "$(printf 'wall %ss, %.1fs per file on average' "$wall" \
  "$(awk -v c="$cpu" -v n="${#job_ids[@]}" 'BEGIN { print c / n }')")"
echo "torch2 check: $ok files OK, $failed failed"
((failed == 0))
