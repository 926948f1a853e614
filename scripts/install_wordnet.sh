#!/usr/bin/env bash
# Make WordNet 3.0 readable by NLTK inside the virtual environment, without network access to
# NLTK's servers: Debian's wordnet-base (the database) and wordnet-sense-index (index.sense),
# plus the `lexnames` file NLTK expects (the 45 lexicographer file names, a fixed list), copied
# into $1/corpora/wordnet (NLTK refuses links that point outside its data folder). NLTK searches <venv>/nltk_data by itself.
# Where Debian's packages cannot be had, `python -m nltk.downloader wordnet` does the same job.
set -euo pipefail
dest="${1:?usage: install_wordnet.sh NLTK_DATA_DIR}"
src=/usr/share/wordnet
if [ ! -f "$src/data.noun" ] || [ ! -f "$src/index.sense" ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base wordnet-sense-index >/dev/null
  else
    echo "WordNet not found in $src: run 'sudo apt-get install wordnet-base wordnet-sense-index'" \
         "or 'python -m nltk.downloader wordnet'" >&2
    exit 1
  fi
fi
mkdir -p "$dest/corpora/wordnet"
for f in "$src"/data.* "$src"/index.* "$src"/*.exc "$src"/cntlist.rev; do
  cp -f "$f" "$dest/corpora/wordnet/"
done
python3 - "$dest/corpora/wordnet/lexnames" <<'PY'
import sys
names = """adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute
noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group
noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession
noun.process noun.quantity noun.relation noun.shape noun.state noun.substance noun.time
verb.body verb.change verb.cognition verb.communication verb.competition verb.consumption
verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession verb.social
verb.stative verb.weather adj.ppl""".split()
assert len(names) == 45
category = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
with open(sys.argv[1], "w") as f:
    for i, n in enumerate(names):
        f.write(f"{i:02d}\t{n}\t{category[n.split('.')[0]]}\n")
PY
