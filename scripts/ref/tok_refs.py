#!/usr/bin/env python3
"""tok_refs: reference token ids and chat prompts from HF for tests/test_tokenizer.c and test_chat.c.

  python3 scripts/ref/tok_refs.py --make-corpus            writes tests/data/tok/corpus.jsonl
  python3 scripts/ref/tok_refs.py --tok DIR --out OUTDIR   writes OUTDIR/ref.jsonl, chat_ref.jsonl

corpus.jsonl: one object per line, {"n": index, "what": category, "hex": UTF-8 bytes as hex}
(hex, because the C side's JSON parser cannot hold a NUL inside a string, and some cases have one).

ref.jsonl (HF `tokenizers`: Tokenizer.from_file(DIR/tokenizer.json)), one line per corpus entry:
  {"n", "ids": encode(text, add_special_tokens=False).ids,
   "decoded_hex": decode(ids, skip_special_tokens=False) as UTF-8 hex,
   "nfc_hex": unicodedata.normalize("NFC", text) as hex}
and a first line {"meta": {tokenizers version, unicodedata version, ...}}.

chat_ref.jsonl (transformers AutoTokenizer.from_pretrained(DIR).apply_chat_template(tokenize=False)):
  {"messages": [...], "add_generation_prompt": bool, "enable_thinking": true|false|null,
   "text": rendered prompt, "ids": the rendered prompt's ids (add_special_tokens=False)}
(enable_thinking null = the argument not passed, the template's default).

Generated on the device machine (it has tokenizers and transformers); the tokenizer files come from
scripts/deps.sh (.deps/qwen3-tokenizer).
"""
import argparse
import json
import os
import random
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(ROOT, "tests", "data", "tok", "corpus.jsonl")


def corpus_cases():
    """(category, text) pairs: hand-written cases first, then seeded random mixes."""
    c = []

    def add(what, *texts):
        for t in texts:
            c.append((what, t))

    add("empty", "")
    add("english",
        "Hello world!",
        "The quick brown fox jumps over the lazy dog.",
        "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness.",
        "Call me Ishmael. Some years ago—never mind how long precisely—having little or no money in my purse, "
        "and nothing particular to interest me on shore, I thought I would sail about a little and see the watery part of the world.",
        "  leading spaces and trailing spaces   ",
        "Mr. O'Neil's 3rd-grade class—\"quoted\" text… and (parentheses) [brackets] {braces}.",
        "e-mail: someone@example.com, URL: https://example.org/path?q=1&x=%20y#frag",
        "ALL CAPS SENTENCE WITH SOME NUMBERS 12345 AND SYMBOLS !@#$%^&*()",
        "Mixed CamelCaseWords and snake_case_words and kebab-case-words.",
        "A sentence ending without punctuation",
        "Tabs\tbetween\twords\tand a trailing tab\t",
        "naïve café résumé coöperate façade jalapeño",
        "Ünïcödé wörds: Straße, Äpfel, Øresund, Ångström, Łódź, Čeština, Ελληνικά, Русский текст.")
    add("contractions",
        "I'm sure it's fine, we'll see, they've gone, you're right, he'd know, don't, can't, won't.",
        "I'M SURE IT'S FINE, WE'LL SEE, THEY'VE GONE, YOU'RE RIGHT, HE'D KNOW, DON'T.",
        "I'm It'S We'Ll They'VE You'Re He'D 'S 'T 'RE 'VE 'M 'LL 'D",
        "'s't're've'm'll'd", "'sss 'tt 'rer 'vev 'mm 'lll 'dd", "rock'n'roll o'clock y'all ma'am",
        "’s curly apostrophe: it’s, we’ll, I’m",
        "long s: 'ſ 'ſt Kelvin: 'K", "''' '' ' 's")
    add("digits",
        "1234567890", "3.14159265358979323846", "1,000,000 and 1 000 000 and 1_000_000",
        "Call 555-0123 or +1 (800) 555-0199 ext. 42", "2024-01-31T23:59:59Z",
        "0x1F 0b1010 1e-9 -42 +7 ½ ¾ ² ³ ①②③ Ⅻ ٣٤٥ ३४५ 一二三",
        "99999999999999999999999999999999999999999999999999")
    add("code",
        "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
        "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
        "for (int i = 0; i < n; ++i) { a[i] += b[i] * c; }",
        "const f = async (x) => { await g(x?.y ?? 0); return x >>> 2; };",
        "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%smith%';",
        "<div class=\"container\"><p>Hello &amp; welcome</p></div>",
        "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
        "#include <stdio.h>\n#define MAX(a,b) ((a)>(b)?(a):(b))\n",
        "    indented    code    with    runs    of    spaces",
        "x=1;y=2;z=x+y;print(z)", "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
        "$ ls -la | grep '\\.txt$' && echo \"done\" || exit 1",
        "/* comment */ // another\n# python comment\n-- sql comment",
        "<think>inside code</think> and <tool_call>{\"name\": \"f\"}</tool_call>")
    add("whitespace",
        " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r\n\r\n", "\r", " \n ", "\t\t\t", "a\n\n\nb",
        "line1\r\nline2\r\nline3", "trailing newline\n", "\n leading newline", "a  b   c    d     e",
        "spaces before newline   \nnext", "mixed \t \n \r\n whitespace", "\u00a0non-breaking\u00a0space",
        "ideographic\u3000space", "em\u2003space and thin\u2009space", "line\u2028separator\u2029paragraph",
        "next\u0085line", "vertical\u000btab and form\u000cfeed", "zero\u200bwidth\u200cnon\u200djoiner",
        "mongolian\u180evowel separator", "bom\ufeffinside", "word \n\n  \n word")
    add("cjk",
        "你好，世界！", "我爱自然语言处理。今天天气很好，我们去公园散步吧。",
        "日本語のテキストです。カタカナとひらがなと漢字。", "東京都渋谷区", "中文English混合text测试123",
        "「引用」『二重』【括弧】〈山〉《书名》", "一二三四五六七八九十百千万亿",
        "天地玄黄宇宙洪荒日月盈昃辰宿列张寒来暑往秋收冬藏闰余成岁律吕调阳云腾致雨露结为霜金生丽水玉出昆冈")
    add("korean",
        "안녕하세요, 세계!", "한국어 텍스트를 토큰화합니다.", "대한민국의 수도는 서울입니다.",
        "ㄱㄴㄷㄹ ㅏㅑㅓㅕ", "\u1100\u1161\u11a8 conjoining jamo")
    add("rtl",
        "مرحبا بالعالم", "اللغة العربية جميلة جداً.", "שלום עולם", "עברית היא שפה שמית.",
        "mixed English עברית and العربية 123", "\u202eright-to-left override\u202c",
        "فارسی: سلام دنیا", "اردو: ہیلو")
    add("other_scripts",
        "Привет, мир! Съешь же ещё этих мягких французских булок.", "Γειά σου Κόσμε",
        "नमस्ते दुनिया", "হ্যালো বিশ্ব", "สวัสดีชาวโลก", "Xin chào thế giới", "გამარჯობა",
        "Բարեւ աշխարհ", "ሰላም ዓለም", "ᚠᚢᚦᚨᚱᚲ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙", "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３")
    add("emoji",
        "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸🇯🇵🇩🇪", "🇺🇸 flag and 🇫🇷 flag",
        "❤️ red heart ❤ text heart", "I love 🍕 and 🍣!!!", "👩🏽‍💻👨🏿‍🚀🧑‍🔬", "🏴󠁧󠁢󠁳󠁣󠁴󠁿 Scotland",
        "1️⃣ #️⃣ *️⃣ keycaps", "🤦‍♂️🤷‍♀️", "emoji😀between😀words", "😀😀😀😀😀😀😀😀")
    add("combining",
        "e\u0301", "cafe\u0301", "A\u030a", "n\u0303", "o\u0308", "u\u0308ber", "s\u0323\u0307",
        "q\u0307\u0323", "\u1e0b\u0323", "a\u0300\u0301\u0302\u0303\u0304", "\u0041\u030a\u0301",
        "Vietnamese: Vie\u0323\u0302t Nam", "Z\u0351\u0352\u0353a\u0354\u0355\u0356l\u0357\u0358g\u0359o",
        "\u212b angstrom sign", "\u2126 ohm sign", "\u00c5 vs A\u030a vs \u212b",
        "hangul decomposed \u1112\u1161\u11ab\u1100\u1173\u11af", "\u0958 devanagari qa",
        "\u0300 leading combining mark", "\u00e9\u0301 double accent")
    add("special_tokens",
        "<|im_start|>user\nHello<|im_end|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>",
        "text<|endoftext|>more text", "a<|im_end|>b<|im_start|>c", "<think>\n\n</think>\n\n",
        "<think>reasoning here</think>answer", "  <|im_start|>  spaced  <|im_end|>  ",
        "<|im_start|><|im_end|><|im_start|>", "<|im_start", "|im_end|>", "<|im_start|im_end|>",
        "<<|im_start|>>", "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>", "<tool_call>x</tool_call>",
        "<|vision_start|><|image_pad|><|vision_end|>", "<|box_start|>(1,2)<|box_end|>",
        "<tool_response>ok</tool_response>", "<|IM_START|> wrong case", "\n<|im_end|>\n")
    add("long",
        "a" * 3000, "ab" * 1500, "supercalifragilisticexpialidocious" * 40,
        "Pneumonoultramicroscopicsilicovolcanoconiosis",
        "https://example.com/" + "x" * 500 + "?q=" + "y" * 300,
        "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo" * 30, "=" * 1000, "-" * 200 + "\n" + "_" * 200,
        "1234567890" * 100, " " * 1000, "\n" * 300, "中" * 1000, "😀" * 300,
        "The quick brown fox. " * 100)
    add("control",
        "\u0000", "a\u0000b", "\u0001\u0002\u0003", "\u007f", "\u0080\u009f", "soft\u00adhyphen",
        "\ufffd replacement char", "\ue000 private use \U000f0000", "\U0010fffd", "\u2060 word joiner")

    rng = random.Random(1234)
    pieces = [
        "the", "The", " of", " and", "'s", "'LL", " I'm", "cat", "DOG", "123", "4", " 56", "3.5",
        " ", "  ", "\t", "\n", "\r\n", "\n\n", "!", "?!", "...", "—", "(", ")", "{", "}", "\"", "'",
        "你好", "世界", "テスト", "한국", "مرحبا", "שלום", "😀", "👍🏽", "👨‍👩‍👧", "🇯🇵", "e\u0301",
        "a\u0308", "\u00a0", "\u3000", "<|im_start|>", "<|im_end|>", "<think>", "</think>",
        "<|endoftext|>", "def", "(x)", "=>", "->", "::", "#", "//", "ſ", "①", "Ⅻ", "٣", "\u200b",
        "\u180e", "\u0085", "\u2028", "ß", "ﬁ", "İ", "ǅ",
    ]
    for _ in range(120):
        k = rng.randint(1, 24)
        c.append(("random_mix", "".join(rng.choice(pieces) for _ in range(k))))
    return c


def make_corpus():
    os.makedirs(os.path.dirname(CORPUS), exist_ok=True)
    cases = corpus_cases()
    with open(CORPUS, "w", encoding="utf-8") as f:
        for i, (what, text) in enumerate(cases):
            f.write(json.dumps({"n": i, "what": what, "hex": text.encode("utf-8").hex()}) + "\n")
    print(f"{len(cases)} corpus strings -> {CORPUS}")


def chat_cases():
    th = "<think>\nLet me think.\nStep 2.\n</think>\n\nThe answer is 4."
    S = {"role": "system", "content": "You are a helpful assistant."}
    U = lambda c: {"role": "user", "content": c}
    A = lambda c: {"role": "assistant", "content": c}
    T = lambda c: {"role": "tool", "content": c}
    convs = [
        [U("Hello!")],
        [S, U("What is 2+2?")],
        [S, U("What is 2+2?"), A(th), U("And 3+3?")],
        [U("What is 2+2?"), A("4"), U("And 3+3?"), A("6"), U("Thanks")],
        [S, U("Q1"), A(th)],
        [U("Q1"), A("plain answer, no think")],
        [U("Q1"), A("\n\nleading newlines answer")],
        [U("Q1"), A("<think>only open tag, no close")],
        [U("Q1"), A("a</think>b</think>\n\nc")],
        [U("Q1"), A("<think>\n\n</think>\n\nempty reasoning")],
        [U("Q1"), A("<think>x</think><think>y</think>z")],
        [S, U("first"), {"role": "system", "content": "second system"}, U("then")],
        [U("call a tool"), A("<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>"),
         T("result one"), T("result two")],
        [U("q"), A("calling"), T("r"), A(th)],
        [U("q"), U("<tool_response>\nx\n</tool_response>"), A(th)],
        [U("")],
        [S],
        [{"role": "system", "content": ""}, U("x")],
        [U("Unicode: 你好 😀 café\nmultiline\r\nwith CRLF")],
        [U("contains <|im_end|> and <think> tags in text")],
        [U("q1"), A(th), U("q2"), A("<think>\nsecond reasoning\n</think>\n\nsecond answer")],
    ]
    out = []
    for m in convs:
        for gen in (True, False):
            for think in (None, True, False):
                out.append((m, gen, think))
    return out


def make_refs(tokdir, outdir):
    from tokenizers import Tokenizer
    import tokenizers
    os.makedirs(outdir, exist_ok=True)
    tok = Tokenizer.from_file(os.path.join(tokdir, "tokenizer.json"))
    with open(CORPUS, encoding="utf-8") as f:
        corpus = [json.loads(line) for line in f]
    with open(os.path.join(outdir, "ref.jsonl"), "w") as f:
        meta = {"tokenizers": tokenizers.__version__, "unidata": unicodedata.unidata_version,
                "python": sys.version.split()[0], "n": len(corpus)}
        f.write(json.dumps({"meta": meta}) + "\n")
        for e in corpus:
            text = bytes.fromhex(e["hex"]).decode("utf-8")
            ids = tok.encode(text, add_special_tokens=False).ids
            dec = tok.decode(ids, skip_special_tokens=False)
            f.write(json.dumps({"n": e["n"], "ids": ids, "decoded_hex": dec.encode("utf-8").hex(),
                                "nfc_hex": unicodedata.normalize("NFC", text).encode("utf-8").hex()}) + "\n")
    print(f"ref.jsonl: {len(corpus)} entries (tokenizers {tokenizers.__version__})")

    import transformers
    from transformers import AutoTokenizer
    at = AutoTokenizer.from_pretrained(tokdir)
    n = 0
    with open(os.path.join(outdir, "chat_ref.jsonl"), "w") as f:
        f.write(json.dumps({"meta": {"transformers": transformers.__version__}}) + "\n")
        for msgs, gen, think in chat_cases():
            kw = {} if think is None else {"enable_thinking": think}
            text = at.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen, **kw)
            ids = tok.encode(text, add_special_tokens=False).ids
            f.write(json.dumps({"messages": msgs, "add_generation_prompt": gen, "enable_thinking": think,
                                "text": text, "ids": ids}, ensure_ascii=False) + "\n")
            n += 1
    print(f"chat_ref.jsonl: {n} entries (transformers {transformers.__version__})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make-corpus", action="store_true")
    ap.add_argument("--tok", help="directory with tokenizer.json and tokenizer_config.json")
    ap.add_argument("--out", help="output directory for ref.jsonl and chat_ref.jsonl")
    a = ap.parse_args()
    if a.make_corpus:
        make_corpus()
    elif a.tok and a.out:
        make_refs(a.tok, a.out)
    else:
        ap.error("give --make-corpus, or --tok DIR --out DIR")


if __name__ == "__main__":
    main()
