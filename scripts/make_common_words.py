"""Build src/tacleaner/text/data/common_words.tsv, the list of common English words that
subtext replacements must come from (not a runtime dependency: run it to regenerate the file).

    pip install wordfreq==3.1.1 nltk && python scripts/make_common_words.py

Source: wordfreq 3.1.1 (Robyn Speer; data CC BY-SA 4.0, from Wikipedia, subtitles, news, books,
web text, Twitter and Reddit), English, the 60,000 most frequent words. Kept: lowercase
alphabetic words with a Zipf frequency of at least 3.3 (about 2 occurrences per million words)
that WordNet 3.0 knows (as a lemma or an inflected form). Each line: word, Zipf frequency.
"""
from pathlib import Path

import wordfreq
from nltk.corpus import wordnet as wn

MIN_ZIPF = 3.3
OUT = Path(__file__).resolve().parents[1] / "src" / "tacleaner" / "text" / "data" / "common_words.tsv"


def main() -> None:
    rows = []
    for word in wordfreq.top_n_list("en", 60000):
        if not (word.isalpha() and word.islower() and word.isascii()):
            continue
        zipf = wordfreq.zipf_frequency(word, "en")
        if zipf >= MIN_ZIPF and (wn.synsets(word) or any(wn.morphy(word, p) for p in "nvar")):
            rows.append((word, zipf))
    rows.sort(key=lambda r: (-r[1], r[0]))
    header = (f"# common English words: wordfreq 3.1.1 (CC BY-SA 4.0) top 60,000, Zipf >= {MIN_ZIPF}, "
              f"known to WordNet 3.0; {len(rows)} words; made by scripts/make_common_words.py\n")
    OUT.write_text(header + "".join(f"{w}\t{z:.2f}\n" for w, z in rows), encoding="utf-8")
    print(f"wrote {OUT}: {len(rows)} words")


if __name__ == "__main__":
    main()
