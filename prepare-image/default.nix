# Builds `nixery-prepare-image`, the wrapper program through which a
# Nix-packaged nixery runs its Nix step (set NIXERY_PREPARE_IMAGE to
# `<this>/bin/nixery-prepare-image`).
#
# nixery calls it two ways:
#   - with the arguments it would otherwise give nix-build after the file
#     name (`--timeout N --argstr packages ... --argstr srcType ...
#     --argstr srcArgs ... --argstr system ...`); the wrapper adds the Nix
#     files of this directory, so they come from the store;
#   - with `path-info` and store paths, to read their closure; the wrapper
#     runs `nix path-info --json --recursive --closure-size` on them.
#
# Works with nixpkgs and with ./offline-pkgs (which provides
# writeShellScriptBin but no `nix`: pass `nixBuild` and `nix` then).
{
  pkgs ? import <nixpkgs> { },
  # The nix-build program to run.
  nixBuild ? "${pkgs.nix}/bin/nix-build",
  # The nix program to run.
  nix ? "${pkgs.nix}/bin/nix",
}:
pkgs.writeShellScriptBin "nixery-prepare-image" ''
  if [ "$1" = path-info ]; then
    shift
    exec ${nix} --extra-experimental-features nix-command \
      path-info --json --recursive --closure-size "$@"
  fi
  exec ${nixBuild} --no-out-link "$@" \
    ${./prepare-image.nix} --argstr loadPkgs ${./load-pkgs.nix}
''
