"""Extract English prose sentences from CPython's pydoc_data.topics (the Language Reference text)."""
import random, re, sys
import pydoc_data.topics as t

def paragraphs(text):
    lines = text.splitlines()
    para = []
    for line in lines:
        if not line.strip():
            if para: yield para
            para = []; continue
        para.append(line)
    if para: yield para

sents = []
for key in sorted(t.topics):
    text = t.topics[key]
    prev_code = False
    for para in paragraphs(text):
        indent = min(len(l) - len(l.lstrip()) for l in para)
        joined = " ".join(l.strip() for l in para)
        # skip code blocks (deeper indentation after "::" or ":" intros), tables and headings
        if any(l.strip().startswith((">>>", "...", "|", "+--", "===", "---")) for l in para):
            continue
        if indent >= 5 and not joined.startswith("*"):
            continue
        joined = re.sub(r"^\* ", "", joined)
        for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"“])", joined):
            s = s.strip()
            words = s.split()
            if not (4 <= len(words) <= 70): continue
            if not s[0].isupper() or s[-1] not in ".!?": continue
            letters = sum(c.isalpha() or c == " " for c in s)
            if letters / len(s) < 0.88: continue
            if any(tok in s for tok in ("==", "->", "()", "[]", "{}", "__", "::", "+=", "**")): continue
            if s.endswith(":"): continue
            sents.append(s)
seen, uniq = set(), []
for s in sents:
    if s not in seen:
        seen.add(s); uniq.append(s)
random.Random(0).shuffle(uniq)
uniq = uniq[:1500]
print(len(sents), len(uniq), file=sys.stderr)
lens = sorted(len(s.split()) for s in uniq)
print("words p10/p50/p90/max", lens[len(lens)//10], lens[len(lens)//2], lens[9*len(lens)//10], lens[-1], file=sys.stderr)
open(sys.argv[1], "w").write("\n".join(uniq) + "\n")
