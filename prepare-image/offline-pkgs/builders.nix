# The build helpers of nixpkgs that prepare-image.nix and this package set
# use (`runCommand`, `writeText`, `symlinkJoin`, `writeShellScriptBin`),
# imitated without a standard environment: every build runs the host's
# `/bin/sh` with the host's `/usr/bin:/bin` on PATH. That needs
# `sandbox = false`, and it is only ever used at build time: no output of
# this set refers to a host path (binaries are copied into the store).
{ system, lib, shellInterpreter }:
rec {
  # Like nixpkgs' `runCommand name env script`: `env` becomes the
  # derivation's attributes (environment variables of the build). The
  # script ends with `true`: dash execs the last command of `sh -c`, and a
  # last program that closes stdio before it exits gets the build killed
  # by Nix 2.8 (see prepare-image.nix).
  runCommand = name: env: script:
    derivation ({
      inherit name system;
      builder = "/bin/sh";
      args = [ "-e" "-c" (script + "\ntrue\n") ];
      PATH = "/usr/bin:/bin";
    } // env);

  # Like nixpkgs' `writeText name text`: a store file holding `text`.
  writeText = name: text:
    runCommand name { inherit text; passAsFile = [ "text" ]; } ''
      cp "$textPath" "$out"
    '';

  # Like nixpkgs' `writeShellScriptBin name text`: `$out/bin/<name>` runs
  # `text` with a shell from the store.
  writeShellScriptBin = name: text:
    runCommand name { inherit text; passAsFile = [ "text" ]; } ''
      mkdir -p "$out/bin"
      { printf '#!%s\n' "${shellInterpreter}"; cat "$textPath"; } > "$out/bin/${name}"
      chmod 0755 "$out/bin/${name}"
    '';

  # Like nixpkgs' `symlinkJoin { name, paths }`, which runs X.Org's
  # `lndir -silent` once per path: one tree of real directories whose other
  # entries are symlinks, to the file in the path, or, for a symlink, to
  # its own target; a symlink to a directory stays a symlink; the first
  # path that provides a name wins, and nothing goes below a name the tree
  # has as a symlink; directories named RCS, SCCS, CVS, CVS.adm, .svn, .git
  # or .hg are skipped. (nixery computes this tree itself, see
  # src/symlink_layer/forest.rs; tests compare the two.)
  symlinkJoin = { name, paths, ... }:
    runCommand name { paths = map (p: "${p}") paths; } ''
      mkdir -p "$out"
      for p in $paths; do
        cd "$p"
        find . -mindepth 1 -exec sh -c '
          out=$1 src=$2; shift 2
          for f; do
            f=''${f#./}
            parent=$(dirname "$f")
            if [ "$parent" != . ] && { [ -L "$out/$parent" ] || [ ! -d "$out/$parent" ]; }; then
              continue
            fi
            if [ -d "$f" ] && [ ! -L "$f" ]; then
              case "''${f##*/}" in RCS|SCCS|CVS|CVS.adm|.svn|.git|.hg) continue ;; esac
              if [ ! -e "$out/$f" ] && [ ! -L "$out/$f" ]; then mkdir "$out/$f"; fi
            elif [ -e "$out/$f" ] || [ -L "$out/$f" ]; then
              continue
            elif [ -L "$f" ]; then
              ln -s "$(readlink "$f")" "$out/$f"
            else
              ln -s "$src/$f" "$out/$f"
            fi
          done' sh "$out" "$p" {} +
      done
    '';
}
