# Builds `nixery-prepare-image`, the wrapper program through which a
# Nix-packaged nixery runs its Nix step (set NIXERY_PREPARE_IMAGE to
# `<this>/bin/nixery-prepare-image`).
#
# nixery calls it with the arguments it would otherwise give nix-build after
# the file name (`--timeout N --argstr packages ... --argstr srcType ...
# --argstr srcArgs ... --argstr system ...`); the wrapper adds the Nix files
# of this directory, so they come from the store.
#
# Works with nixpkgs and with ./offline-pkgs (which provides
# writeShellScriptBin but no `nix`: pass `nixBuild` then).
{
  pkgs ? import <nixpkgs> { },
  # The nix-build program to run.
  nixBuild ? "${pkgs.nix}/bin/nix-build",
}:
pkgs.writeShellScriptBin "nixery-prepare-image" ''
  exec ${nixBuild} --no-out-link "$@" \
    ${./prepare-image.nix} --argstr loadPkgs ${./load-pkgs.nix}
''
