# The part of nixpkgs' `lib` that prepare-image.nix and this package set use,
# written against Nix builtins only. Each function has the same name,
# argument order and result as its nixpkgs counterpart, so prepare-image.nix
# cannot tell the two apart.
let
  upper = [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ];
  lower = [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];

  # Characters that have a meaning in a POSIX extended regular expression.
  regexSpecials = [ "\\" "[" "{" "(" ")" "^" "$" "?" "*" "+" "|" "." ];
  escapeRegex = builtins.replaceStrings regexSpecials (map (c: "\\" + c) regexSpecials);
in
rec {
  # ASCII upper case to lower case; other characters are kept.
  toLower = builtins.replaceStrings upper lower;

  # Split `s` at every occurrence of the literal string `sep`.
  splitString = sep: s: builtins.filter builtins.isString (builtins.split (escapeRegex sep) s);

  # Whether the nested attribute `attrPath` (a list of names) exists in `e`.
  hasAttrByPath = attrPath: e:
    if attrPath == [ ] then true
    else
      let name = builtins.head attrPath; in
      builtins.isAttrs e && e ? ${name} && hasAttrByPath (builtins.tail attrPath) e.${name};

  # The nested attribute `attrPath` of `set`, or `default` when it is missing.
  attrByPath = attrPath: default: set:
    if attrPath == [ ] then set
    else
      let name = builtins.head attrPath; in
      if builtins.isAttrs set && set ? ${name}
      then attrByPath (builtins.tail attrPath) default set.${name}
      else default;

  # Whether `value` is a derivation.
  isDerivation = value: builtins.isAttrs value && (value.type or null) == "derivation";

  concatStringsSep = builtins.concatStringsSep;
}
