"""Checks build/prepare_text's word-level output against fairseq's own logic.

fairseq's Dictionary (fairseq/data/dictionary.py) and tokenize_line (fairseq/tokenizer.py)
are restated here line for line, so fairseq itself need not be installed:
  /usr/bin/python3 dev/check_text_ref.py VOCAB_FROM OUTDIR SPLIT=FILE...
e.g. after `build/prepare_text words --train T --valid V out`:
  /usr/bin/python3 dev/check_text_ref.py T out train=T val=V
"""
import re
import sys
from collections import Counter

import numpy as np

SPACE_NORMALIZER = re.compile(r"\s+")


def tokenize_line(line):
    line = SPACE_NORMALIZER.sub(" ", line)
    line = line.strip()
    return line.split()


def fairseq_dictionary(path):
    symbols, count, indices = [], [], {}

    def add_symbol(word, n=1):
        if word in indices:
            count[indices[word]] += n
            return
        indices[word] = len(symbols)
        symbols.append(word)
        count.append(n)

    for s in ["<s>", "<pad>", "</s>", "<unk>"]:
        add_symbol(s)
    nspecial = 4
    counter = Counter()
    with open(path, encoding="utf-8") as f:  # add_file_to_dictionary
        for line in f:
            for word in tokenize_line(line):
                counter.update([word])
            counter.update(["</s>"])
    for w, c in sorted(counter.items()):
        add_symbol(w, c)
    # finalize(threshold=-1, nwords=-1, padding_factor=8)
    c = Counter(dict(sorted(zip(symbols[nspecial:], count[nspecial:]))))
    new_symbols = symbols[:nspecial]
    for symbol, _ in c.most_common(len(symbols) - nspecial):
        new_symbols.append(symbol)
    symbols[:] = new_symbols
    indices.clear()
    indices.update({s: i for i, s in enumerate(symbols)})
    count[:] = [0] * len(symbols)
    i = 0
    while len(symbols) % 8 != 0:  # pad_to_multiple_
        add_symbol("madeupword{:04d}".format(i), n=0)
        i += 1
    return symbols, indices


def unescape(line):
    out, i = [], 0
    table = {"\\": "\\", "n": "\n", "t": "\t", "r": "\r", "s": " "}
    while i < len(line):
        if line[i] == "\\":
            out.append(table[line[i + 1]])
            i += 2
        else:
            out.append(line[i])
            i += 1
    return "".join(out)


def read_shard(path):
    header = np.fromfile(path, dtype=np.int32, count=256)
    dtype = np.uint16 if header[0] == 20240520 else np.uint32
    return np.fromfile(path, dtype=dtype, offset=1024)


def main():
    vocab_from, outdir, splits = sys.argv[1], sys.argv[2], sys.argv[3:]
    symbols, indices = fairseq_dictionary(vocab_from)
    with open(f"{outdir}/vocab.txt", encoding="utf-8", newline="\n") as f:
        ours = [unescape(l.rstrip("\n")) for l in f]
    ok = ours == symbols
    print(f"vocabulary: fairseq {len(symbols)}, ours {len(ours)}, identical: {ok}")
    for spec in splits:
        name, path = spec.split("=", 1)
        ids = []
        with open(path, encoding="utf-8") as f:  # Dictionary.encode_line, append_eos=True
            for line in f:
                ids.extend(indices.get(w, 3) for w in tokenize_line(line))
                ids.append(2)
        got = read_shard(f"{outdir}/{name}.bin")
        same = len(got) == len(ids) and bool(np.all(got == np.array(ids, dtype=got.dtype)))
        print(f"{name}: fairseq {len(ids)} tokens, ours {len(got)}, identical: {same}")
        ok = ok and same
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
