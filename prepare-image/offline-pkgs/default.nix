# An offline package set shaped like the part of nixpkgs that Nixery uses,
# for tests and for running the server without network access.
#
# There is no internet here, so the packages are made from host tools at
# build time (`sandbox = false` is required): Debian's statically linked
# `/bin/busybox` is copied into the libc-like base `glibc`, and every
# program is either a busybox applet symlink or a script whose interpreter
# is that store copy of busybox. Library files are stand-ins generated from
# a deterministic generator (AES-CTR keystream of a fixed key). Every
# package embeds the store paths of its dependencies, so Nix records real
# references and the closures have the shapes of real ones: most packages
# share `glibc`, `git` and `curl` share `zlib` and `openssl`, `htop` and
# `nano` share `ncurses`, and `bigpkg`'s closure exceeds 100 MB.
#
# Like nixpkgs, it is a function taking `system` and `config` (of which it
# reads `allowUnfree`, `allowBroken`, `allowInsecure`) and ignoring other
# arguments such as `overlays`. Its derivations are declared for `system`,
# so an `aarch64-linux` image evaluates here but does not build (the
# busybox is an x86_64 binary).
#
# Like nixpkgs, it refuses packages when their derivation is used, with
# its messages (see `checkMeta`): `_1password` is unfree, `rssh` insecure,
# `grub4dos` broken, `contacts` only for Darwin; `alienfx` is a removed
# package (an alias that throws), `uses-broken` depends on a broken
# package, `lib` and `python3Packages` are not derivations.
#
# Test fixtures: `failing` is a build that fails (`xss-failing`: printing
# markup), `sleepy` a build that sleeps 1000 seconds (`sleepy-long`:
# 1001), `throws` an attribute whose evaluation throws, `type-error` one
# whose evaluation fails in a way `builtins.tryEval` cannot catch.
# `hello` prints the line in ./hello-greeting.txt ("Hello, world!").
{ system ? builtins.currentSystem, config ? { }, ... }:
let
  lib = import ./lib.nix;

  # The store copy of busybox runs every script of this set.
  shellInterpreter = "${glibc}/bin/busybox sh";

  builders = import ./builders.nix { inherit system lib shellInterpreter; };
  inherit (builders) runCommand writeText writeShellScriptBin symlinkJoin;

  greeting = builtins.head (lib.splitString "\n" (builtins.readFile ./hello-greeting.txt));

  # Shell functions available to every build script below:
  #   filler NAME SIZE FILE   write SIZE deterministic pseudo-random bytes
  #   needs FILE PATH...      record dependencies in FILE (like an RPATH)
  # and, in `programPrelude`:
  #   program FILE TEXT       write an executable script run by busybox sh
  prelude = ''
    filler() {
      mkdir -p "$(dirname "$3")"
      key=$(printf '%s' "$1" | sha256sum | cut -c1-32)
      head -c "$2" /dev/zero \
        | openssl enc -aes-128-ctr -nosalt -K "$key" -iv 00000000000000000000000000000000 > "$3"
    }
    needs() {
      file=$1; shift
      for dep in "$@"; do printf 'NEEDED %s\n' "$dep" >> "$file"; done
    }
  '';

  # `program` needs glibc, so `glibc` itself is built with `prelude` only.
  programPrelude = prelude + ''
    program() {
      mkdir -p "$(dirname "$1")"
      printf '#!%s\n%s\n' "${shellInterpreter}" "$2" > "$1"
      chmod 0755 "$1"
    }
  '';

  # A package built by `script` (after the prelude) into $out.
  package = name: script: runCommand name { } (programPrelude + ''
    mkdir -p "$out"
  '' + script);

  # A program that prints its version and names the libraries it links to.
  simpleProgram = { name, version, bin, libs ? [ ], libSize ? 65536 }:
    package "${name}-${version}" ''
      filler ${name} ${toString libSize} "$out/lib/lib${name}.so"
      needs "$out/lib/lib${name}.so" ${lib.concatStringsSep " " (map (l: "${l}") ([ glibc ] ++ libs))}
      program "$out/bin/${bin}" 'echo "${name} ${version} (nixery offline package set)"'
    '';

  glibc = runCommand "glibc-2.40-66" { } (prelude + ''
    mkdir -p "$out/bin" "$out/lib" "$out/share/locale"
    # The one real binary of the set, the "dynamic loader" of all others.
    cp /bin/busybox "$out/bin/busybox"
    chmod 0555 "$out/bin/busybox"
    filler libc 1500000 "$out/lib/libc.so.6"
    filler libm 400000 "$out/lib/libm.so.6"
    ln -s libc.so.6 "$out/lib/libc.so"
    printf 'C.UTF-8/UTF-8\n' > "$out/share/locale/SUPPORTED"
  '');

  zlib = simpleProgram { name = "zlib"; version = "1.3.1"; bin = "zpipe"; libSize = 100000; };
  openssl = simpleProgram { name = "openssl"; version = "3.0.14"; bin = "openssl"; libSize = 600000; };
  ncurses = simpleProgram { name = "ncurses"; version = "6.4"; bin = "tput"; libSize = 300000; };
  gmp = simpleProgram { name = "gmp"; version = "6.3.0"; bin = "gmp-config"; libSize = 500000; };

  # Applets of busybox that stand in for GNU coreutils.
  coreutilsApplets = [
    "basename" "cat" "chmod" "cp" "cut" "date" "dirname" "echo" "env" "false" "head" "id" "ln" "ls"
    "mkdir" "mktemp" "mv" "printf" "pwd" "readlink" "rm" "sha256sum" "sleep" "sort" "tail" "tee"
    "touch" "tr" "true" "uname" "uniq" "wc" "whoami" "yes"
  ];

  coreutils = package "coreutils-9.5" ''
    mkdir -p "$out/bin"
    for applet in ${lib.concatStringsSep " " coreutilsApplets}; do
      ln -s ${glibc}/bin/busybox "$out/bin/$applet"
    done
  '';

  # A build that sleeps `seconds` (a test fixture).
  sleeper = name: seconds: runCommand name { } ''
    sleep ${toString seconds}
    mkdir -p "$out"
  '';

  # Like nixpkgs' check-meta: a package whose `meta` makes it unfree
  # (unless config.allowUnfree), broken, not for `system` or insecure keeps
  # its attributes, `meta` included, but throws when its derivation is used.
  checkMeta = meta: drv:
    let
      licenses = let l = meta.license or [ ]; in if builtins.isList l then l else [ l ];
      problem =
        if !(config.allowUnfree or false) && builtins.any (l: !(l.free or true)) licenses
        then "has an unfree license (‘unfree’)"
        else if (meta.broken or false) && !(config.allowBroken or false)
        then "is marked as broken"
        else if meta ? platforms && !(builtins.elem system meta.platforms)
        then "is not available on the requested hostPlatform ${system}"
        else if (meta.knownVulnerabilities or [ ]) != [ ] && !(config.allowInsecure or false)
        then "is marked as insecure"
        else null;
      refuse = throw "Package ‘${drv.name}’ ${problem}, refusing to evaluate.";
    in
    drv // { inherit meta; }
    // (if problem == null then { } else { drvPath = refuse; outPath = refuse; });

  unfree = { free = false; shortName = "unfree"; fullName = "Unfree"; };

  bashInteractive = package "bash-interactive-5.2p32" ''
    mkdir -p "$out/share/bash"
    program "$out/bin/bash" 'exec ${glibc}/bin/busybox ash "$@"'
    ln -s bash "$out/bin/sh"
    printf 'PS1="\\w \\$ "\n' > "$out/share/bash/bashrc"
  '';
in
rec {
  inherit lib runCommand writeText writeShellScriptBin symlinkJoin;
  inherit glibc zlib openssl ncurses gmp coreutils bashInteractive;
  bash = bashInteractive;
  runtimeShell = "${bashInteractive}/bin/bash";

  hello = package "hello-2.12.1" ''
    program "$out/bin/hello" 'echo "${greeting}"'
    mkdir -p "$out/share/man/man1"
    printf '.TH HELLO 1\n' > "$out/share/man/man1/hello.1"
  '';

  curl = simpleProgram { name = "curl"; version = "8.9.1"; bin = "curl"; libs = [ zlib openssl ]; libSize = 400000; };
  git = simpleProgram { name = "git"; version = "2.46.0"; bin = "git"; libs = [ zlib openssl curl ]; libSize = 2000000; };
  htop = simpleProgram { name = "htop"; version = "3.3.0"; bin = "htop"; libs = [ ncurses ]; libSize = 200000; };
  nano = simpleProgram { name = "nano"; version = "8.1"; bin = "nano"; libs = [ ncurses ]; libSize = 250000; };

  # Several programs and a declared main one, as nixpkgs' gnugrep.
  gnugrep = package "gnugrep-3.11" ''
    program "$out/bin/grep" 'echo "grep 3.11 (nixery offline package set)"'
    ln -s grep "$out/bin/egrep"
    ln -s grep "$out/bin/fgrep"
  '' // { meta.mainProgram = "grep"; };

  moreutils = package "moreutils-0.69" ''
    mkdir -p "$out/bin"
    ln -s ${glibc}/bin/busybox "$out/bin/ts"
    program "$out/bin/sponge" 'f=$(${coreutils}/bin/mktemp) && ${coreutils}/bin/cat > "$f" && ${coreutils}/bin/mv "$f" "$1"'
  '';

  # Closure over 100 MB: the layering treats it as a layer of its own.
  bigpkg = package "bigpkg-1.0" ''
    mkdir -p "$out/share/bigpkg"
    filler bigpkg 104857600 "$out/share/bigpkg/data.bin"
    program "$out/bin/bigpkg" 'echo "bigpkg 1.0"'
    needs "$out/share/bigpkg/deps" ${glibc}
  '';

  haskellPackages = {
    stylish-haskell = simpleProgram { name = "stylish-haskell"; version = "0.14.6.0"; bin = "stylish-haskell"; libs = [ gmp ]; };
    hello = simpleProgram { name = "haskell-hello"; version = "1.0.0.2"; bin = "hello-hs"; libs = [ gmp ]; };
  };

  _1password = checkMeta { license = unfree; }
    (simpleProgram { name = "1password-cli"; version = "2.30.0"; bin = "op"; });

  rssh = checkMeta { knownVulnerabilities = [ "CVE-2019-1000018" ]; }
    (simpleProgram { name = "rssh"; version = "2.3.4"; bin = "rssh"; });

  grub4dos = checkMeta { broken = true; }
    (simpleProgram { name = "grub4dos"; version = "0.4.6a"; bin = "grub4dos"; });

  contacts = checkMeta { platforms = [ "x86_64-darwin" "aarch64-darwin" ]; }
    (simpleProgram { name = "contacts"; version = "1.1a-3"; bin = "contacts"; });

  uses-broken = package "uses-broken-1.0" ''
    needs "$out/deps" ${grub4dos}
  '';

  # Removed from the set: an alias that throws, as nixpkgs' aliases.nix has.
  alienfx = throw "alienfx has been removed.";

  python3Packages = {
    requests = simpleProgram { name = "python3.12-requests"; version = "2.32.3"; bin = "requests"; };
  };

  # A CA bundle in the place nixpkgs' cacert has it, with one self-signed
  # root generated at build time.
  cacert = runCommand "nss-cacert-3.104" { HOME = "/homeless-shelter"; } ''
    mkdir -p "$out/etc/ssl/certs"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout /dev/null -subj "/O=Nixery offline package set/CN=Nixery Offline Root CA" \
      -days 36500 -out cert.pem 2>/dev/null
    { printf 'Nixery Offline Root CA\n======================\n'; cat cert.pem; } > "$out/etc/ssl/certs/ca-bundle.crt"
  '';

  iana-etc = runCommand "iana-etc-20240318" { } ''
    mkdir -p "$out/etc"
    cat > "$out/etc/protocols" <<'END'
    ip	0	IP		# Internet Protocol, pseudo protocol number
    icmp	1	ICMP		# Internet Control Message
    tcp	6	TCP		# Transmission Control
    udp	17	UDP		# User Datagram
    ipv6-icmp	58	IPv6-ICMP	# ICMP for IPv6
    END
    cat > "$out/etc/services" <<'END'
    ssh	22/tcp
    domain	53/tcp
    domain	53/udp
    http	80/tcp
    https	443/tcp
    END
  '';

  failing = runCommand "failing-1.0" { } ''
    echo "failing: this build fails on purpose" >&2
    exit 1
  '';

  # Fails printing markup, so the status page can show it must escape
  # build output (tests/status_page*.rs).
  xss-failing = runCommand "xss-failing-1.0" {
    markup = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">";
  } ''
    printf '%s\n' "$markup" >&2
    exit 1
  '';

  sleepy = sleeper "sleepy-1.0" 1000;
  # A second one, so that two tests never wait for the same build.
  sleepy-long = sleeper "sleepy-long-1.0" 1001;

  throws = throw "throws: this attribute of the offline package set throws on purpose";

  type-error = 1 + "one";
}
