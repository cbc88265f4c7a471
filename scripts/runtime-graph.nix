# The runtime graph of `contents` the way prepare-image.nix gets it (its
# `runtimeGraph`): a derivation whose structured attributes carry
# exportReferencesGraph and whose output is those attributes. Built by the
# benchmarks that measure or use that graph (bench-runtime-graph.sh,
# bench-layering.sh). `; true` keeps bash, not cp, as the last process
# (see prepare-image.nix).
{ pkgs, name, contents }:
derivation {
  inherit name;
  system = builtins.currentSystem;
  builder = "${pkgs.bash}/bin/bash";
  args = [ "-c" ''${pkgs.coreutils}/bin/cp "''${NIX_ATTRS_JSON_FILE:-.attrs.json}" "${placeholder "out"}"; true'' ];
  __structuredAttrs = true;
  exportReferencesGraph.graph = contents;
}
