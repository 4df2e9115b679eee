/* unicode.c - category lookup, UTF-8 helpers and the hand-written pre-tokenizer matchers.
 *
 * Each matcher implements one of llama.cpp's pre-tokenizer regular expressions (quoted
 * above it) as a function that answers "how long is the match starting at pos" with the
 * semantics of std::regex ECMAScript: alternatives are tried left to right and the first
 * that matches wins; quantifiers are greedy and backtrack. A match never extends past the
 * end of the fragment it runs on (so `$` and `(?!\S)` see the fragment end). In the
 * expressions without \p{..} llama.cpp replaces non-ASCII white space by U+000B before
 * matching, so literal code point ranges never match such a character; in_ranges() keeps
 * that rule.
 */
#include "engine/unicode.h"

#include <string.h>

unsigned unicode_flags(uint32_t cp)
{
    /* Binary search for the last range starting at or before cp. */
    size_t lo = 0, hi = unicode_n_ranges;
    if (cp > 0x10FFFF) return UNICODE_CAT_UNDEF;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (unicode_range_first[mid] <= cp)
            lo = mid;
        else
            hi = mid;
    }
    return unicode_range_flags[lo];
}

enum unicode_cat unicode_cat(uint32_t cp)
{
    return (enum unicode_cat)(unicode_flags(cp) & UNICODE_F_CAT_MASK);
}

bool unicode_is_ws(uint32_t cp)
{
    return (unicode_flags(cp) & UNICODE_F_WS) != 0;
}

/* Binary search in a sorted [n][2] map; cp itself if absent. */
static uint32_t map_lookup(const uint32_t (*map)[2], size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (map[mid][0] < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && map[lo][0] == cp ? map[lo][1] : cp;
}

uint32_t unicode_tolower(uint32_t cp)
{
    if (cp < 0x80) return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
    return map_lookup(unicode_lower_map, unicode_n_lower, cp);
}

uint32_t unicode_nfd_first(uint32_t cp)
{
    if (cp < 0xC0) return cp;
    /* Hangul syllables decompose algorithmically: S = 0xAC00 + (L * 21 + V) * 28 + T. */
    if (cp >= 0xAC00 && cp <= 0xD7A3) return 0x1100 + (cp - 0xAC00) / (21 * 28);
    return map_lookup(unicode_nfd_map, unicode_n_nfd, cp);
}

size_t unicode_utf8_len(unsigned char lead)
{
    static const unsigned char lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[lead >> 4];
}

uint32_t unicode_utf8_decode(const unsigned char *s, size_t len, size_t *n_used)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp;
    *n_used = 1;
    if (c < 0x80) return c;
    if (!(c & 0x40)) return 0xFFFD; /* stray continuation byte */
    if (!(c & 0x20)) {
        n = 2;
        cp = c & 0x1F;
    } else if (!(c & 0x10)) {
        n = 3;
        cp = c & 0x0F;
    } else if (!(c & 0x08)) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0xFFFD;
    }
    if (len < n) return 0xFFFD;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0xFFFD;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    *n_used = n;
    return cp;
}

size_t unicode_utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | ((cp >> 18) & 0x07));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t unicode_utf8_complete_len(const unsigned char *s, size_t len)
{
    /* Look back at most 3 bytes for a lead byte whose sequence is not finished yet. */
    for (size_t back = 1; back <= 3 && back <= len; back++) {
        unsigned char c = s[len - back];
        if ((c & 0xC0) == 0x80) continue; /* continuation: keep looking for the lead */
        size_t need = (c >= 0xF0 && c <= 0xF7) ? 4 : (c >= 0xE0) && c < 0xF0 ? 3
                      : (c >= 0xC0 && c < 0xE0)  ? 2
                                                 : 1;
        return need > back ? len - back : len;
    }
    return len;
}

/* ---- pre-tokenizer matchers ------------------------------------------------------------ */

struct span {
    const uint32_t *cps;
    size_t end; /* fragment end (exclusive) */
};

static bool is_l(uint32_t cp)
{
    if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
    return unicode_cat(cp) == UNICODE_CAT_L;
}

static bool is_n(uint32_t cp)
{
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    return unicode_cat(cp) == UNICODE_CAT_N;
}

static bool is_p(uint32_t cp)
{
    return unicode_cat(cp) == UNICODE_CAT_P;
}

static bool is_ws(uint32_t cp)
{
    if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
    return unicode_is_ws(cp);
}

/* [^\s\p{L}\p{N}] */
static bool is_other(uint32_t cp)
{
    return !is_ws(cp) && !is_l(cp) && !is_n(cp);
}

static bool is_crlf(uint32_t cp)
{
    return cp == '\r' || cp == '\n';
}

struct cp_range {
    uint32_t lo, hi;
};

/* Literal class of a \p-free expression: non-ASCII white space never matches (see top). */
static bool in_ranges(uint32_t cp, const struct cp_range *r, size_t n)
{
    if (cp >= 0x80 && unicode_is_ws(cp)) return false;
    for (size_t i = 0; i < n; i++)
        if (cp >= r[i].lo && cp <= r[i].hi) return true;
    return false;
}

typedef bool (*cp_pred)(uint32_t cp);

/* End of the run of code points satisfying pred starting at pos. */
static size_t run_end(const struct span *s, size_t pos, cp_pred pred)
{
    while (pos < s->end && pred(s->cps[pos])) pos++;
    return pos;
}

/* Matcher result: > 0 match length at pos; 0 no match at pos; -k: no match at pos and the
 * k - 1 positions after it either (lets the driver skip a run in one step). */
typedef long (*matcher_fn)(const struct span *s, size_t pos, int param);

/* ' ?X+' for a predicate X (also '\s?X+' when any_ws). */
static long opt_space_run(const struct span *s, size_t pos, cp_pred pred, bool any_ws)
{
    uint32_t c = s->cps[pos];
    bool sp = any_ws ? is_ws(c) : c == ' ';
    if (sp && pos + 1 < s->end && pred(s->cps[pos + 1]))
        return (long)(run_end(s, pos + 1, pred) - pos);
    if (pred(c)) return (long)(run_end(s, pos, pred) - pos);
    return 0;
}

/* 's|'t|'re|'ve|'m|'ll|'d, case-insensitive (ASCII) when icase. */
static long contraction(const struct span *s, size_t pos, bool icase)
{
    if (s->cps[pos] != '\'' || pos + 1 >= s->end) return 0;
    uint32_t a = s->cps[pos + 1];
    if (icase && a >= 'A' && a <= 'Z') a += 32;
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (pos + 2 >= s->end) return 0;
    uint32_t b = s->cps[pos + 2];
    if (icase && b >= 'A' && b <= 'Z') b += 32;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

/* '\s+(?!\S)': the whole run at the fragment end, else all of it but the last one. */
static long ws_not_before_nonws(const struct span *s, size_t pos)
{
    size_t e = run_end(s, pos, is_ws);
    if (e == pos) return 0;
    if (e == s->end) return (long)(e - pos);
    return e - pos >= 2 ? (long)(e - pos - 1) : 0;
}

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S) */
static long m_gpt2(const struct span *s, size_t pos, int param)
{
    (void)param;
    long k = contraction(s, pos, false);
    if (!k) k = opt_space_run(s, pos, is_l, false);
    if (!k) k = opt_space_run(s, pos, is_n, false);
    if (!k) k = opt_space_run(s, pos, is_other, false);
    if (!k) k = ws_not_before_nonws(s, pos);
    return k;
}

/* (?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|
 * \p{N}{1,param}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * param 3 = llama3, 1 = qwen2. */
static long m_llama3(const struct span *s, size_t pos, int param)
{
    long k = contraction(s, pos, true);
    if (k) return k;
    uint32_t c = s->cps[pos];
    if (is_l(c)) return (long)(run_end(s, pos, is_l) - pos);
    if (!is_crlf(c) && !is_n(c) && pos + 1 < s->end && is_l(s->cps[pos + 1]))
        return (long)(run_end(s, pos + 1, is_l) - pos);
    if (is_n(c)) {
        size_t e = pos + 1;
        while (e < s->end && (long)(e - pos) < param && is_n(s->cps[e])) e++;
        return (long)(e - pos);
    }
    size_t q = pos;
    if (c == ' ' && pos + 1 < s->end && is_other(s->cps[pos + 1])) q = pos + 1;
    if (is_other(s->cps[q])) {
        size_t e = run_end(s, q, is_other);
        e = run_end(s, e, is_crlf);
        return (long)(e - pos);
    }
    /* Only white space is left: \s*[\r\n]+ ends at the run's last \r or \n. */
    size_t e = run_end(s, pos, is_ws), last_nl = 0;
    for (size_t i = pos; i < e; i++)
        if (is_crlf(s->cps[i])) last_nl = i + 1;
    if (last_nl) return (long)(last_nl - pos);
    k = ws_not_before_nonws(s, pos);
    if (k) return k;
    return (long)(e - pos); /* \s+ */
}

static bool is_default_punct(uint32_t cp)
{
    return is_p(cp) || cp == '$' || cp == '+' || cp == '<' || cp == '=' || cp == '>' ||
           cp == '^' || cp == '~' || cp == '|';
}

static bool is_falcon_punct(uint32_t cp)
{
    return is_default_punct(cp) || cp == '`';
}

/* [\p{P}\$\+<=>\^~\|]+ (param 0) or falcon's [\p{P}\$\+<=>\^~\|`]+ (param 1) */
static long m_punct(const struct span *s, size_t pos, int param)
{
    cp_pred pred = param ? is_falcon_punct : is_default_punct;
    return (long)(run_end(s, pos, pred) - pos);
}

/* \p{N}+ (param 0) or \p{N} (param 1) */
static long m_digits(const struct span *s, size_t pos, int param)
{
    if (!is_n(s->cps[pos])) return 0;
    return param ? 1 : (long)(run_end(s, pos, is_n) - pos);
}

static bool is_ascii_digit(uint32_t cp)
{
    return cp >= '0' && cp <= '9';
}

/* [0-9][0-9][0-9] */
static long m_ascii3(const struct span *s, size_t pos, int param)
{
    (void)param;
    if (pos + 3 > s->end) return 0;
    for (size_t i = 0; i < 3; i++)
        if (!is_ascii_digit(s->cps[pos + i])) return 0;
    return 3;
}

/* [\r\n] */
static long m_crlf(const struct span *s, size_t pos, int param)
{
    (void)param;
    return is_crlf(s->cps[pos]) ? 1 : 0;
}

/* deepseek-llm's letter class [A-Za-zµÀ-ÖØ-öø-ƺ...𞤀-𞥃] */
static const struct cp_range k_ds_letters[] = {
    {0x41, 0x5A}, {0x61, 0x7A}, {0xB5, 0xB5}, {0xC0, 0xD6}, {0xD8, 0xF6}, {0xF8, 0x1BA},
    {0x1BC, 0x1BF}, {0x1C4, 0x293}, {0x295, 0x2AF}, {0x370, 0x373}, {0x376, 0x377},
    {0x37B, 0x37D}, {0x37F, 0x37F}, {0x386, 0x386}, {0x388, 0x38A}, {0x38C, 0x38C},
    {0x38E, 0x3A1}, {0x3A3, 0x3F5}, {0x3F7, 0x481}, {0x48A, 0x52F}, {0x531, 0x556},
    {0x10A0, 0x10C5}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD}, {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF},
    {0x1D00, 0x1D2B}, {0x1D6B, 0x1D77}, {0x1D79, 0x1D9A}, {0x1E00, 0x1F15}, {0x1F18, 0x1F1D},
    {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B},
    {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE},
    {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC},
    {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC}, {0x2102, 0x2102}, {0x2107, 0x2107}, {0x210A, 0x2113},
    {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124}, {0x2126, 0x2126}, {0x2128, 0x2128},
    {0x212A, 0x212D}, {0x212F, 0x2134}, {0x2139, 0x2139}, {0x213C, 0x213F}, {0x2145, 0x2149},
    {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2C7B}, {0x2C7E, 0x2CE4}, {0x2CEB, 0x2CEE},
    {0x2CF2, 0x2CF3}, {0xA640, 0xA66D}, {0xA680, 0xA69B}, {0xA722, 0xA76F}, {0xA771, 0xA787},
    {0xA78B, 0xA78E}, {0xAB70, 0xABBF}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFF21, 0xFF3A},
    {0xFF41, 0xFF5A}, {0x10400, 0x1044F}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB},
    {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
};

static bool is_ds_letter(uint32_t cp)
{
    return in_ranges(cp, k_ds_letters, sizeof k_ds_letters / sizeof k_ds_letters[0]);
}

/* deepseek-llm's [!-/:-~！-／：-～‘-‟　-。] */
static const struct cp_range k_ds_punct[] = {
    {0x21, 0x2F}, {0x3A, 0x7E}, {0xFF01, 0xFF0F}, {0xFF1A, 0xFF5E}, {0x2018, 0x201F},
    {0x3000, 0x3002},
};

static bool is_ds_punct(uint32_t cp)
{
    return in_ranges(cp, k_ds_punct, sizeof k_ds_punct / sizeof k_ds_punct[0]);
}

/* [一-龥ࠀ-一가-퟿] */
static const struct cp_range k_cjk[] = {{0x4E00, 0x9FA5}, {0x800, 0x4E00}, {0xAC00, 0xD7FF}};

static bool is_cjk(uint32_t cp)
{
    return in_ranges(cp, k_cjk, sizeof k_cjk / sizeof k_cjk[0]);
}

/* \s?[deepseek letters]+ (0), \s?[deepseek punct]+ (1), \s?\p{L}+ (2), \s?\p{P}+ (3) */
static long m_ws_opt_run(const struct span *s, size_t pos, int param)
{
    static const cp_pred preds[] = {is_ds_letter, is_ds_punct, is_l, is_p};
    return opt_space_run(s, pos, preds[param], true);
}

/* \s+$ */
static long m_ws_at_end(const struct span *s, size_t pos, int param)
{
    (void)param;
    size_t e = run_end(s, pos, is_ws);
    if (e == pos) return 0;
    return e == s->end ? (long)(e - pos) : -(long)(e - pos);
}

/* [一-龥ࠀ-一가-퟿]+ */
static long m_cjk(const struct span *s, size_t pos, int param)
{
    (void)param;
    return (long)(run_end(s, pos, is_cjk) - pos);
}

/* [^(\s|.,!?…。，、।۔،)] - the parentheses and '|' are literal members of the class. */
static bool is_poro_word(uint32_t cp)
{
    static const uint32_t excl[] = {'(', ')', '|', '.', ',', '!', '?', 0x2026, 0x3002, 0xFF0C,
                                    0x3001, 0x0964, 0x06D4, 0x060C};
    if (is_ws(cp)) return false;
    for (size_t i = 0; i < sizeof excl / sizeof excl[0]; i++)
        if (cp == excl[i]) return false;
    return true;
}

/*  ?[^(\s|.,!?…。，、।۔،)]+ */
static long m_poro(const struct span *s, size_t pos, int param)
{
    (void)param;
    return opt_space_run(s, pos, is_poro_word, false);
}

/* tekken's letter classes as llama.cpp adapts them: a letter that is not a-z / not A-Z. */
static bool is_tk_upper(uint32_t cp)
{
    return is_l(cp) && !(cp >= 'a' && cp <= 'z');
}

static bool is_tk_lower(uint32_t cp)
{
    return is_l(cp) && !(cp >= 'A' && cp <= 'Z');
}

/* White-space alternatives shared by llama3-like expressions:
 * \s*[\r\n]+|\s+(?!\S)|\s+ (0 if pos is not white space). */
static long ws_tail(const struct span *s, size_t pos)
{
    size_t e = run_end(s, pos, is_ws), last_nl = 0;
    for (size_t i = pos; i < e; i++)
        if (is_crlf(s->cps[i])) last_nl = i + 1;
    if (last_nl) return (long)(last_nl - pos);
    long k = ws_not_before_nonws(s, pos);
    return k ? k : (long)(e - pos);
}

/* llama.cpp's tekken expression:
 * [^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|
 * [^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|
 * \p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static long m_tekken(const struct span *s, size_t pos, int param)
{
    (void)param;
    uint32_t c = s->cps[pos];
    size_t q = pos;
    /* The optional prefix only helps when a letter follows (the rest needs one). */
    if (!is_crlf(c) && !is_l(c) && !is_n(c) && pos + 1 < s->end && is_l(s->cps[pos + 1]))
        q = pos + 1;
    if (is_l(s->cps[q])) {
        size_t a_end = run_end(s, q, is_tk_upper);
        /* A*B+: A* gives back until B+ can start (greedy, so the latest start wins). */
        for (size_t k = a_end + 1; k-- > q;)
            if (k < s->end && is_tk_lower(s->cps[k])) return (long)(run_end(s, k, is_tk_lower) - pos);
        return (long)(a_end - pos); /* A+B*: here B* matches nothing */
    }
    if (is_n(c)) return 1;
    size_t p = pos;
    if (c == ' ' && pos + 1 < s->end && is_other(s->cps[pos + 1])) p = pos + 1;
    if (is_other(s->cps[p])) {
        size_t e = run_end(s, p, is_other);
        while (e < s->end && (is_crlf(s->cps[e]) || s->cps[e] == '/')) e++;
        return (long)(e - pos);
    }
    return ws_tail(s, pos);
}

/* \p{N}{1,3} */
static long m_digits3(const struct span *s, size_t pos, int param)
{
    (void)param;
    size_t e = pos;
    while (e < s->end && e - pos < 3 && is_n(s->cps[e])) e++;
    return (long)(e - pos);
}

/* [一-龥぀-ゟ゠-ヿ]+ */
static const struct cp_range k_cjk_kana[] = {{0x4E00, 0x9FA5}, {0x3040, 0x309F}, {0x30A0, 0x30FF}};

static bool is_cjk_kana(uint32_t cp)
{
    return in_ranges(cp, k_cjk_kana, sizeof k_cjk_kana / sizeof k_cjk_kana[0]);
}

static long m_cjk_kana(const struct span *s, size_t pos, int param)
{
    (void)param;
    return (long)(run_end(s, pos, is_cjk_kana) - pos);
}

static bool is_ascii_letter(uint32_t cp)
{
    return cp < 0x80 && is_l(cp);
}

static bool is_lm(uint32_t cp)
{
    enum unicode_cat c = unicode_cat(cp);
    return c == UNICODE_CAT_L || c == UNICODE_CAT_M;
}

static bool is_ps(uint32_t cp)
{
    enum unicode_cat c = unicode_cat(cp);
    return c == UNICODE_CAT_P || c == UNICODE_CAT_S;
}

/* deepseek-v3's third expression:
 * [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+|
 *  ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static long m_deepseek3(const struct span *s, size_t pos, int param)
{
    (void)param;
    uint32_t c = s->cps[pos];
    bool ascii_punct = c >= 0x21 && c <= 0x7E && !is_ascii_letter(c) && !is_ascii_digit(c);
    if (ascii_punct && pos + 1 < s->end && is_ascii_letter(s->cps[pos + 1]))
        return (long)(run_end(s, pos + 1, is_ascii_letter) - pos);
    if (is_lm(c)) return (long)(run_end(s, pos, is_lm) - pos);
    if (!is_crlf(c) && !is_l(c) && !is_ps(c) && pos + 1 < s->end && is_lm(s->cps[pos + 1]))
        return (long)(run_end(s, pos + 1, is_lm) - pos);
    size_t p = c == ' ' && pos + 1 < s->end && is_ps(s->cps[pos + 1]) ? pos + 1 : pos;
    if (is_ps(s->cps[p])) {
        size_t e = run_end(s, run_end(s, p, is_ps), is_crlf);
        return (long)(e - pos);
    }
    return is_ws(c) ? ws_tail(s, pos) : 0;
}

struct pre_step {
    matcher_fn fn;
    int param;
};

struct pre_pipeline {
    int n_steps;
    struct pre_step steps[6];
};

static const struct pre_pipeline k_pipelines[] = {
    [UNICODE_PRE_DEFAULT] = {4, {{m_punct, 0}, {m_gpt2, 0}, {m_digits, 0}, {m_ascii3, 0}}},
    [UNICODE_PRE_LLAMA3] = {1, {{m_llama3, 3}}},
    [UNICODE_PRE_QWEN2] = {1, {{m_llama3, 1}}},
    [UNICODE_PRE_GPT2] = {1, {{m_gpt2, 0}}},
    [UNICODE_PRE_DEEPSEEK_LLM] = {6,
                                  {{m_crlf, 0},
                                   {m_ws_opt_run, 0},
                                   {m_ws_opt_run, 1},
                                   {m_ws_at_end, 0},
                                   {m_cjk, 0},
                                   {m_digits, 0}}},
    [UNICODE_PRE_DEEPSEEK_CODER] = {5,
                                    {{m_crlf, 0},
                                     {m_ws_opt_run, 2},
                                     {m_ws_opt_run, 3},
                                     {m_cjk, 0},
                                     {m_digits, 1}}},
    [UNICODE_PRE_FALCON] = {3, {{m_punct, 1}, {m_gpt2, 0}, {m_ascii3, 0}}},
    [UNICODE_PRE_STARCODER] = {2, {{m_digits, 1}, {m_gpt2, 0}}},
    [UNICODE_PRE_PORO] = {1, {{m_poro, 0}}},
    [UNICODE_PRE_VIKING] = {2, {{m_poro, 0}, {m_digits, 1}}},
    [UNICODE_PRE_TEKKEN] = {1, {{m_tekken, 0}}},
    [UNICODE_PRE_DEEPSEEK3_LLM] = {3, {{m_digits3, 0}, {m_cjk_kana, 0}, {m_deepseek3, 0}}},
};

/* One expression over every fragment in[0..n_in): like std::regex_iterator, find the
 * leftmost match, emit the text before it and the match, continue after it. */
static size_t split_step(const struct pre_step *st, const uint32_t *cps, const uint32_t *in,
                         size_t n_in, uint32_t *out)
{
    size_t n_out = 0, start = 0;
    for (size_t f = 0; f < n_in; f++) {
        struct span s = {cps, start + in[f]};
        size_t pos = start, gap = start;
        while (pos < s.end) {
            long k = st->fn(&s, pos, st->param);
            if (k <= 0) {
                pos += k < 0 ? (size_t)-k : 1;
                continue;
            }
            if (pos > gap) out[n_out++] = (uint32_t)(pos - gap);
            out[n_out++] = (uint32_t)k;
            pos += (size_t)k;
            gap = pos;
        }
        if (s.end > gap) out[n_out++] = (uint32_t)(s.end - gap);
        start = s.end;
    }
    return n_out;
}

void unicode_pre_split(enum unicode_pre pre, const uint32_t *cps, size_t n, uint32_t *lens,
                       uint32_t *scratch, size_t *n_words)
{
    *n_words = 0;
    if (n == 0) return;
    if ((unsigned)pre >= sizeof k_pipelines / sizeof k_pipelines[0]) pre = UNICODE_PRE_DEFAULT;
    const struct pre_pipeline *pl = &k_pipelines[pre];
    /* Alternate between the two buffers so that the last step writes into lens. */
    uint32_t *cur = (pl->n_steps % 2) ? scratch : lens;
    uint32_t *nxt = (pl->n_steps % 2) ? lens : scratch;
    size_t n_cur = 1;
    cur[0] = (uint32_t)n;
    for (int i = 0; i < pl->n_steps; i++) {
        n_cur = split_step(&pl->steps[i], cps, cur, n_cur, nxt);
        uint32_t *t = cur;
        cur = nxt;
        nxt = t;
    }
    *n_words = n_cur;
}
