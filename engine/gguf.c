/* gguf.c - GGUF v2/v3 reader (mmap, zero copy) and atomic writer (see gguf.h).
 *
 * Follows ggml/docs/gguf.md: header (magic "GGUF", u32 version, u64 n_tensors, u64 n_kv),
 * n_kv key/value pairs, n_tensors tensor infos, padding to general.alignment (default 32),
 * then the data section. v2 and v3 share this layout (v3 only added big-endian files,
 * which we refuse); v1 (u32 counts) is refused. Little-endian hosts only.
 * Every count, length, offset, type and size is checked against the bytes left and for
 * overflow before use; the first problem found is reported with its location.
 * Not done: nested arrays (no known writer emits them) are refused as unsupported.
 */
#include "engine/gguf.h"

#include "core/err.h"
#include "engine/quant.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads little-endian files by memcpy: big-endian hosts are not supported"
#endif

enum {
    GGUF_DEFAULT_ALIGNMENT = 32,
    GGUF_VT_COUNT = 13,
    GGUF_NAME_SHOW = 64, /* bytes of a key or tensor name quoted in messages */
};

static const char GGUF_MAGIC[4] = {'G', 'G', 'U', 'F'};

struct gguf_kv {
    struct gguf_str key;
    enum gguf_vtype type;
    enum gguf_vtype elem_type;  /* arrays only */
    uint64_t n;                 /* arrays: element count; strings: byte length */
    const uint8_t *data;        /* scalar bytes, string bytes, or first array element */
    const uint8_t **elems;      /* string arrays: pointer to each element's u64 length */
    const uint8_t *raw;         /* value as stored after the type tag (for copying) */
    size_t raw_len;
};

struct gguf {
    const uint8_t *base;
    size_t size;
    void *map; /* non-NULL when we own an mmap of size bytes */
    uint32_t version;
    size_t alignment;
    size_t data_offset;
    int64_t n_kv;
    struct gguf_kv *kv;
    int64_t n_tensors;
    struct gguf_tensor *tensors;
    int64_t *kv_hash; /* open addressing, -1 = empty; cap is a power of 2 */
    size_t kv_hash_cap;
    int64_t *t_hash;
    size_t t_hash_cap;
};

/* ---- small helpers ------------------------------------------------------------------- */

static size_t vtype_size(enum gguf_vtype t)
{
    switch (t) {
    case GGUF_VT_U8: case GGUF_VT_I8: case GGUF_VT_BOOL: return 1;
    case GGUF_VT_U16: case GGUF_VT_I16: return 2;
    case GGUF_VT_U32: case GGUF_VT_I32: case GGUF_VT_F32: return 4;
    case GGUF_VT_U64: case GGUF_VT_I64: case GGUF_VT_F64: return 8;
    default: return 0; /* string, array, unknown */
    }
}

const char *gguf_vtype_name(enum gguf_vtype t)
{
    static const char *const names[GGUF_VT_COUNT] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
    };
    if ((unsigned)t >= GGUF_VT_COUNT) return "?";
    return names[t];
}

static uint64_t hash_bytes(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static bool str_eq(struct gguf_str s, const char *p, size_t n)
{
    return s.len == n && (n == 0 || memcmp(s.ptr, p, n) == 0);
}

/* Copies name into out (cap >= 8) for a message: at most GGUF_NAME_SHOW bytes, bytes
 * outside printable ASCII replaced by '?' so hostile names cannot garble a terminal. */
static const char *show_name(struct gguf_str s, char *out, size_t cap)
{
    size_t n = s.len < GGUF_NAME_SHOW ? (size_t)s.len : GGUF_NAME_SHOW;
    if (n > cap - 4) n = cap - 4;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        out[j++] = (c >= 0x20 && c < 0x7f) || c >= 0x80 ? (char)c : '?';
    }
    if (n < s.len) {
        memcpy(out + j, "...", 3);
        j += 3;
    }
    out[j] = 0;
    return out;
}

/* RFC 3629 UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static bool utf8_valid(const uint8_t *s, uint64_t n)
{
    uint64_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int len;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i < (uint64_t)len) return false;
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        i += (uint64_t)len;
    }
    return true;
}

/* ---- bounds-checked cursor --------------------------------------------------------------- */

struct cur {
    const uint8_t *p;
    size_t len;
    size_t pos;
};

static size_t cur_left(const struct cur *c)
{
    return c->len - c->pos;
}

static bool cur_read(struct cur *c, void *dst, size_t n)
{
    if (cur_left(c) < n) return false;
    memcpy(dst, c->p + c->pos, n);
    c->pos += n;
    return true;
}

/* ---- parser ------------------------------------------------------------------------ */

struct parse {
    struct gguf *g;
    struct cur c;
    const char *src; /* file name for messages */
    char *err;
    size_t err_cap;
};

#define PFAIL(P, CODE, ...) perr((P), (CODE), __VA_ARGS__)

static int perr(struct parse *p, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int perr(struct parse *p, int code, const char *fmt, ...)
{
    if (!p->err || p->err_cap == 0) return code;
    int n = snprintf(p->err, p->err_cap, "%s: ", p->src);
    if (n < 0 || (size_t)n >= p->err_cap) return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err + n, p->err_cap - (size_t)n, fmt, ap);
    va_end(ap);
    return code;
}

/* Reads a GGUF string (u64 length + bytes) for item `what` (e.g. "key #3"). */
static int parse_str(struct parse *p, const char *what, struct gguf_str *out)
{
    uint64_t len;
    size_t at = p->c.pos;
    if (!cur_read(&p->c, &len, 8))
        return PFAIL(p, MESH_EBADMODEL, "%s: string length at offset %zu is cut off by the end of file (%zu bytes)",
                     what, at, p->c.len);
    if (len > cur_left(&p->c))
        return PFAIL(p, MESH_EBADMODEL, "%s: string length %llu at offset %zu exceeds the file (%zu bytes)", what,
                     (unsigned long long)len, at, p->c.len);
    out->ptr = (const char *)p->c.p + p->c.pos;
    out->len = len;
    p->c.pos += (size_t)len;
    return 0;
}

/* Parses the value of kv (type already read) at the cursor. */
static int parse_value(struct parse *p, struct gguf_kv *kv, const char *what)
{
    size_t start = p->c.pos;
    int rc = 0;
    if (kv->type == GGUF_VT_STRING) {
        struct gguf_str s;
        rc = parse_str(p, what, &s);
        if (rc) return rc;
        kv->data = (const uint8_t *)s.ptr;
        kv->n = s.len;
    } else if (kv->type == GGUF_VT_ARRAY) {
        uint32_t et;
        uint64_t n;
        if (!cur_read(&p->c, &et, 4) || !cur_read(&p->c, &n, 8))
            return PFAIL(p, MESH_EBADMODEL, "%s: array header at offset %zu is cut off by the end of file", what,
                         start);
        if (et >= GGUF_VT_COUNT) return PFAIL(p, MESH_EBADMODEL, "%s: unknown array element type %u", what, et);
        if (et == GGUF_VT_ARRAY)
            return PFAIL(p, MESH_EUNSUPPORTED, "%s: nested arrays are not supported", what);
        kv->elem_type = (enum gguf_vtype)et;
        kv->n = n;
        kv->data = p->c.p + p->c.pos;
        if (et == GGUF_VT_STRING) {
            /* Each element takes at least its 8-byte length. */
            if (n > cur_left(&p->c) / 8)
                return PFAIL(p, MESH_EBADMODEL, "%s: array of %llu strings exceeds the file (%zu bytes)", what,
                             (unsigned long long)n, p->c.len);
            kv->elems = malloc((size_t)(n ? n : 1) * sizeof *kv->elems);
            if (!kv->elems) return PFAIL(p, MESH_ENOMEM, "%s: out of memory for %llu strings", what,
                                         (unsigned long long)n);
            for (uint64_t j = 0; j < n; j++) {
                uint64_t len;
                size_t at = p->c.pos;
                kv->elems[j] = p->c.p + at;
                if (!cur_read(&p->c, &len, 8) || len > cur_left(&p->c))
                    return PFAIL(p, MESH_EBADMODEL,
                                 "%s: string #%llu (at offset %zu) extends past end of file (%zu bytes)", what,
                                 (unsigned long long)j, at, p->c.len);
                p->c.pos += (size_t)len;
            }
        } else {
            size_t es = vtype_size((enum gguf_vtype)et);
            if (n > cur_left(&p->c) / es)
                return PFAIL(p, MESH_EBADMODEL, "%s: array of %llu %s values exceeds the file (%zu bytes)", what,
                             (unsigned long long)n, gguf_vtype_name((enum gguf_vtype)et), p->c.len);
            p->c.pos += (size_t)n * es;
        }
    } else {
        size_t es = vtype_size(kv->type);
        kv->data = p->c.p + p->c.pos;
        if (cur_left(&p->c) < es)
            return PFAIL(p, MESH_EBADMODEL, "%s: %s value at offset %zu is cut off by the end of file", what,
                         gguf_vtype_name(kv->type), start);
        p->c.pos += es;
    }
    kv->raw = p->c.p + start;
    kv->raw_len = p->c.pos - start;
    return 0;
}

static size_t hash_cap_for(int64_t n)
{
    size_t cap = 16;
    while (cap < (size_t)n * 2) cap *= 2;
    return cap;
}

/* Inserts index i with name s into table; returns the index already there if s is taken. */
static int64_t hash_insert(int64_t *tab, size_t cap, struct gguf_str s, int64_t i,
                           struct gguf_str (*name_of)(const struct gguf *, int64_t), const struct gguf *g)
{
    size_t h = (size_t)hash_bytes(s.ptr, (size_t)s.len) & (cap - 1);
    for (;;) {
        if (tab[h] < 0) {
            tab[h] = i;
            return -1;
        }
        struct gguf_str o = name_of(g, tab[h]);
        if (str_eq(o, s.ptr, (size_t)s.len)) return tab[h];
        h = (h + 1) & (cap - 1);
    }
}

static struct gguf_str kv_name(const struct gguf *g, int64_t i)
{
    return g->kv[i].key;
}

static struct gguf_str tensor_name(const struct gguf *g, int64_t i)
{
    return g->tensors[i].name;
}

static int parse_kvs(struct parse *p, uint64_t n_kv)
{
    struct gguf *g = p->g;
    /* Smallest pair: 8-byte key length, 4-byte type, 1-byte value. */
    if (n_kv > cur_left(&p->c) / 13)
        return PFAIL(p, MESH_EBADMODEL, "key/value count %llu exceeds what the file (%zu bytes) can hold",
                     (unsigned long long)n_kv, p->c.len);
    g->kv = calloc((size_t)(n_kv ? n_kv : 1), sizeof *g->kv);
    g->kv_hash_cap = hash_cap_for((int64_t)n_kv);
    g->kv_hash = malloc(g->kv_hash_cap * sizeof *g->kv_hash);
    if (!g->kv || !g->kv_hash) return PFAIL(p, MESH_ENOMEM, "out of memory for %llu keys", (unsigned long long)n_kv);
    memset(g->kv_hash, 0xff, g->kv_hash_cap * sizeof *g->kv_hash);
    for (uint64_t i = 0; i < n_kv; i++) {
        struct gguf_kv *kv = &g->kv[i];
        char what[160], nb[GGUF_NAME_SHOW + 8];
        snprintf(what, sizeof what, "key #%llu", (unsigned long long)i);
        int rc = parse_str(p, what, &kv->key);
        if (rc) return rc;
        g->n_kv = (int64_t)i + 1; /* so gguf_close frees this entry's arrays */
        if (!utf8_valid((const uint8_t *)kv->key.ptr, kv->key.len))
            return PFAIL(p, MESH_EBADMODEL, "key #%llu '%s' is not valid UTF-8", (unsigned long long)i,
                         show_name(kv->key, nb, sizeof nb));
        if (kv->key.len == 0) return PFAIL(p, MESH_EBADMODEL, "key #%llu is empty", (unsigned long long)i);
        snprintf(what, sizeof what, "key #%llu '%s'", (unsigned long long)i, show_name(kv->key, nb, sizeof nb));
        int64_t dup = hash_insert(g->kv_hash, g->kv_hash_cap, kv->key, (int64_t)i, kv_name, g);
        if (dup >= 0) return PFAIL(p, MESH_EBADMODEL, "%s: duplicate key (also key #%lld)", what, (long long)dup);
        uint32_t t;
        if (!cur_read(&p->c, &t, 4))
            return PFAIL(p, MESH_EBADMODEL, "%s: value type is cut off by the end of file (%zu bytes)", what,
                         p->c.len);
        if (t >= GGUF_VT_COUNT) return PFAIL(p, MESH_EBADMODEL, "%s: unknown value type %u", what, t);
        kv->type = (enum gguf_vtype)t;
        rc = parse_value(p, kv, what);
        if (rc) return rc;
    }
    return 0;
}

static int parse_alignment(struct parse *p)
{
    struct gguf *g = p->g;
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t i = gguf_find_key(g, "general.alignment");
    if (i < 0) return 0;
    if (g->kv[i].type != GGUF_VT_U32)
        return PFAIL(p, MESH_EBADMODEL, "general.alignment has type %s, expected u32",
                     gguf_vtype_name(g->kv[i].type));
    uint32_t a;
    memcpy(&a, g->kv[i].data, 4);
    /* gguf.md: "it must be a multiple of 8"; smaller ones would leave F32 and block data
     * misaligned for the kernels. */
    if (a == 0 || (a & (a - 1)) != 0 || a < 8)
        return PFAIL(p, MESH_EBADMODEL,
                     "general.alignment %u is not a power of two >= 8 (GGUF requires a multiple of 8)", a);
    g->alignment = a;
    return 0;
}

/* Reads one tensor info (name, dims, type, offset) and derives its element count and size. */
static int parse_tensor_info(struct parse *p, int64_t i, struct gguf_tensor *t)
{
    char what[160], nb[GGUF_NAME_SHOW + 8];
    snprintf(what, sizeof what, "tensor #%lld", (long long)i);
    int rc = parse_str(p, what, &t->name);
    if (rc) return rc;
    if (t->name.len == 0) return PFAIL(p, MESH_EBADMODEL, "tensor #%lld has an empty name", (long long)i);
    if (!utf8_valid((const uint8_t *)t->name.ptr, t->name.len))
        return PFAIL(p, MESH_EBADMODEL, "tensor #%lld name '%s' is not valid UTF-8", (long long)i,
                     show_name(t->name, nb, sizeof nb));
    snprintf(what, sizeof what, "tensor '%s'", show_name(t->name, nb, sizeof nb));
    uint32_t n_dims;
    if (!cur_read(&p->c, &n_dims, 4))
        return PFAIL(p, MESH_EBADMODEL, "%s: info is cut off by the end of file (%zu bytes)", what, p->c.len);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return PFAIL(p, MESH_EBADMODEL, "%s: %u dimensions (must be 1..%d)", what, n_dims, GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    int64_t n_elems = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        int64_t ne;
        if (!cur_read(&p->c, &ne, 8))
            return PFAIL(p, MESH_EBADMODEL, "%s: info is cut off by the end of file (%zu bytes)", what, p->c.len);
        if (ne <= 0) return PFAIL(p, MESH_EBADMODEL, "%s: dimension %u is %lld (must be >= 1)", what, d, (long long)ne);
        if (n_elems > INT64_MAX / ne)
            return PFAIL(p, MESH_EBADMODEL, "%s: tensor dims overflow (element count exceeds 2^63)", what);
        n_elems *= ne;
        t->ne[d] = ne;
    }
    t->n_elems = n_elems;
    uint32_t type;
    if (!cur_read(&p->c, &type, 4) || !cur_read(&p->c, &t->offset, 8))
        return PFAIL(p, MESH_EBADMODEL, "%s: info is cut off by the end of file (%zu bytes)", what, p->c.len);
    const struct quant_traits *qt = quant_traits((int)type);
    if (!qt || qt->block_len <= 0 || qt->block_bytes == 0)
        return PFAIL(p, MESH_EBADMODEL, "%s: unknown type %u", what, type);
    t->type = (int)type;
    if (t->ne[0] % qt->block_len != 0)
        return PFAIL(p, MESH_EBADMODEL, "%s: row length %lld is not a multiple of the %s block size %d", what,
                     (long long)t->ne[0], qt->name, qt->block_len);
    size_t row = quant_row_bytes(t->type, t->ne[0]);
    uint64_t n_rows = (uint64_t)(n_elems / t->ne[0]);
    if (row == 0 || (n_rows != 0 && row > SIZE_MAX / n_rows))
        return PFAIL(p, MESH_EBADMODEL, "%s: byte size overflows", what);
    t->size = row * (size_t)n_rows;
    return 0;
}

/* Checks tensor i's data range against the data section and sets its pointer. */
static int place_tensor(struct parse *p, struct gguf_tensor *t)
{
    struct gguf *g = p->g;
    char nb[GGUF_NAME_SHOW + 8];
    show_name(t->name, nb, sizeof nb);
    if (t->offset % g->alignment != 0)
        return PFAIL(p, MESH_EBADMODEL, "tensor '%s': data offset %llu is not a multiple of the alignment %zu", nb,
                     (unsigned long long)t->offset, g->alignment);
    uint64_t avail = g->size - g->data_offset;
    if (t->offset > avail || t->size > avail - t->offset)
        return PFAIL(p, MESH_EBADMODEL,
                     "tensor '%s': data [%llu, %llu) extends past end of file (%zu bytes)", nb,
                     (unsigned long long)g->data_offset + t->offset,
                     (unsigned long long)g->data_offset + t->offset + (unsigned long long)t->size, g->size);
    t->data = g->base + g->data_offset + t->offset;
    return 0;
}

static int parse_tensors(struct parse *p, uint64_t n_tensors)
{
    struct gguf *g = p->g;
    /* Smallest info: 8 + 1 name, 4 dims count, 8 one dim, 4 type, 8 offset. */
    if (n_tensors > cur_left(&p->c) / 33)
        return PFAIL(p, MESH_EBADMODEL, "tensor count %llu exceeds what the file (%zu bytes) can hold",
                     (unsigned long long)n_tensors, p->c.len);
    g->tensors = calloc((size_t)(n_tensors ? n_tensors : 1), sizeof *g->tensors);
    g->t_hash_cap = hash_cap_for((int64_t)n_tensors);
    g->t_hash = malloc(g->t_hash_cap * sizeof *g->t_hash);
    if (!g->tensors || !g->t_hash)
        return PFAIL(p, MESH_ENOMEM, "out of memory for %llu tensors", (unsigned long long)n_tensors);
    memset(g->t_hash, 0xff, g->t_hash_cap * sizeof *g->t_hash);
    for (uint64_t i = 0; i < n_tensors; i++) {
        struct gguf_tensor *t = &g->tensors[i];
        int rc = parse_tensor_info(p, (int64_t)i, t);
        if (rc) return rc;
        g->n_tensors = (int64_t)i + 1;
        int64_t dup = hash_insert(g->t_hash, g->t_hash_cap, t->name, (int64_t)i, tensor_name, g);
        if (dup >= 0) {
            char nb[GGUF_NAME_SHOW + 8];
            return PFAIL(p, MESH_EBADMODEL, "tensor #%llu: duplicate tensor name '%s' (also tensor #%lld)",
                         (unsigned long long)i, show_name(t->name, nb, sizeof nb), (long long)dup);
        }
    }
    /* The data section starts at the next multiple of the alignment. */
    size_t end = p->c.pos;
    size_t pad = (g->alignment - end % g->alignment) % g->alignment;
    if (n_tensors == 0) {
        g->data_offset = pad > g->size - end ? g->size : end + pad;
        return 0;
    }
    if (pad > g->size - end)
        return PFAIL(p, MESH_EBADMODEL, "data section (offset %zu + %zu padding) starts past end of file (%zu bytes)",
                     end, pad, g->size);
    g->data_offset = end + pad;
    for (uint64_t i = 0; i < n_tensors; i++) {
        int rc = place_tensor(p, &g->tensors[i]);
        if (rc) return rc;
    }
    return 0;
}

static int parse_all(struct parse *p)
{
    struct gguf *g = p->g;
    uint8_t magic[4];
    uint32_t version;
    uint64_t n_tensors, n_kv;
    if (!cur_read(&p->c, magic, 4))
        return PFAIL(p, MESH_EBADMODEL, "not a GGUF file (%zu bytes, too short for the magic)", p->c.len);
    if (memcmp(magic, GGUF_MAGIC, 4) != 0)
        return PFAIL(p, MESH_EBADMODEL, "not a GGUF file (magic %02x %02x %02x %02x, expected \"GGUF\")", magic[0],
                     magic[1], magic[2], magic[3]);
    if (!cur_read(&p->c, &version, 4))
        return PFAIL(p, MESH_EBADMODEL, "GGUF header is cut off by the end of file (%zu bytes)", p->c.len);
    if (version == 1)
        return PFAIL(p, MESH_EUNSUPPORTED, "GGUF v1 is not supported (re-convert the model with a current "
                                           "llama.cpp to get GGUF v3)");
    if (version != 2 && version != 3) {
        if ((version & 0xffff) == 0 && version != 0)
            return PFAIL(p, MESH_EUNSUPPORTED, "big-endian GGUF files are not supported");
        return PFAIL(p, version == 0 ? MESH_EBADMODEL : MESH_EUNSUPPORTED, "unsupported GGUF version %u", version);
    }
    g->version = version;
    if (!cur_read(&p->c, &n_tensors, 8) || !cur_read(&p->c, &n_kv, 8))
        return PFAIL(p, MESH_EBADMODEL, "GGUF header is cut off by the end of file (%zu bytes)", p->c.len);
    int rc = parse_kvs(p, n_kv);
    if (rc) return rc;
    rc = parse_alignment(p);
    if (rc) return rc;
    return parse_tensors(p, n_tensors);
}

static int open_common(const uint8_t *buf, size_t len, void *map, const char *src, struct gguf **out, char *err,
                       size_t err_cap)
{
    struct gguf *g = calloc(1, sizeof *g);
    if (!g) {
        if (map) munmap(map, len);
        return err_set(err, err_cap, MESH_ENOMEM, "%s: out of memory", src);
    }
    g->base = buf;
    g->size = len;
    g->map = map;
    struct parse p = {.g = g, .c = {.p = buf, .len = len, .pos = 0}, .src = src, .err = err, .err_cap = err_cap};
    int rc = parse_all(&p);
    if (rc) {
        gguf_close(g);
        return rc;
    }
    *out = g;
    return 0;
}

int gguf_open(const char *path, struct gguf **out, char *err, size_t err_cap)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return err_set(err, err_cap, e == ENOENT ? MESH_ENOTFOUND : MESH_EIO, "%s: %s", path, strerror(e));
    }
    struct stat st;
    int rc = 0;
    void *map = NULL;
    if (fstat(fd, &st) != 0) {
        rc = err_set(err, err_cap, MESH_EIO, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = err_set(err, err_cap, MESH_EIO, "%s: not a regular file", path);
        goto out;
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        rc = err_set(err, err_cap, MESH_EUNSUPPORTED, "%s: file too large for this address space", path);
        goto out;
    }
    size_t len = (size_t)st.st_size;
    if (len == 0) {
        rc = err_set(err, err_cap, MESH_EBADMODEL, "%s: not a GGUF file (empty)", path);
        goto out;
    }
    map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        rc = err_set(err, err_cap, err_from_errno(errno) == MESH_ENOMEM ? MESH_ENOMEM : MESH_EIO,
                     "%s: mmap failed: %s", path, strerror(errno));
        goto out;
    }
    rc = open_common(map, len, map, path, out, err, err_cap);
out:
    close(fd);
    return rc;
}

int gguf_open_mem(const void *buf, size_t len, struct gguf **out, char *err, size_t err_cap)
{
    *out = NULL;
    return open_common(buf, len, NULL, "<memory>", out, err, err_cap);
}

void gguf_close(struct gguf *g)
{
    if (!g) return;
    if (g->kv)
        for (int64_t i = 0; i < g->n_kv; i++) free(g->kv[i].elems);
    free(g->kv);
    free(g->kv_hash);
    free(g->tensors);
    free(g->t_hash);
    if (g->map) munmap(g->map, g->size);
    free(g);
}

uint32_t gguf_version(const struct gguf *g)
{
    return g->version;
}

size_t gguf_alignment(const struct gguf *g)
{
    return g->alignment;
}

size_t gguf_file_size(const struct gguf *g)
{
    return g->size;
}

size_t gguf_data_offset(const struct gguf *g)
{
    return g->data_offset;
}

/* ---- metadata access ------------------------------------------------------------------ */

int64_t gguf_kv_count(const struct gguf *g)
{
    return g->n_kv;
}

int64_t gguf_find_key(const struct gguf *g, const char *key)
{
    if (!g->kv_hash || !key) return -1;
    size_t n = strlen(key);
    size_t h = (size_t)hash_bytes(key, n) & (g->kv_hash_cap - 1);
    for (;;) {
        int64_t i = g->kv_hash[h];
        if (i < 0) return -1;
        if (i < g->n_kv && str_eq(g->kv[i].key, key, n)) return i;
        h = (h + 1) & (g->kv_hash_cap - 1);
    }
}

struct gguf_str gguf_kv_key(const struct gguf *g, int64_t i)
{
    struct gguf_str none = {"", 0};
    if (i < 0 || i >= g->n_kv) return none;
    return g->kv[i].key;
}

enum gguf_vtype gguf_kv_type(const struct gguf *g, int64_t i)
{
    if (i < 0 || i >= g->n_kv) return (enum gguf_vtype)-1;
    return g->kv[i].type;
}

/* A scalar as the widest exact forms: is_int with i (signed, if fits) / u (unsigned). */
struct scalar {
    bool is_float;
    bool is_neg;   /* integer < 0 */
    uint64_t u;    /* integer magnitude when !is_neg, else unused */
    int64_t i;     /* integer value when it fits in int64 */
    bool fits_i64;
    double f;
};

static bool kv_scalar(const struct gguf_kv *kv, struct scalar *s)
{
    memset(s, 0, sizeof *s);
    const uint8_t *d = kv->data;
    int64_t iv = 0;
    uint64_t uv = 0;
    bool is_signed = false;
    switch (kv->type) {
    case GGUF_VT_U8: case GGUF_VT_BOOL: uv = d[0]; break;
    case GGUF_VT_I8: { int8_t v; memcpy(&v, d, 1); iv = v; is_signed = true; break; }
    case GGUF_VT_U16: { uint16_t v; memcpy(&v, d, 2); uv = v; break; }
    case GGUF_VT_I16: { int16_t v; memcpy(&v, d, 2); iv = v; is_signed = true; break; }
    case GGUF_VT_U32: { uint32_t v; memcpy(&v, d, 4); uv = v; break; }
    case GGUF_VT_I32: { int32_t v; memcpy(&v, d, 4); iv = v; is_signed = true; break; }
    case GGUF_VT_U64: memcpy(&uv, d, 8); break;
    case GGUF_VT_I64: memcpy(&iv, d, 8); is_signed = true; break;
    case GGUF_VT_F32: { float v; memcpy(&v, d, 4); s->is_float = true; s->f = v; return true; }
    case GGUF_VT_F64: memcpy(&s->f, d, 8); s->is_float = true; return true;
    default: return false;
    }
    if (kv->type == GGUF_VT_BOOL) uv = uv != 0;
    if (is_signed) {
        s->i = iv;
        s->fits_i64 = true;
        s->is_neg = iv < 0;
        s->u = iv < 0 ? 0 : (uint64_t)iv;
        s->f = (double)iv;
    } else {
        s->u = uv;
        s->fits_i64 = uv <= (uint64_t)INT64_MAX;
        s->i = s->fits_i64 ? (int64_t)uv : 0;
        s->f = (double)uv;
    }
    return true;
}

/* Looks up key; MESH_ENOTFOUND or a pointer to its kv. */
static int find_kv(const struct gguf *g, const char *key, const struct gguf_kv **kv)
{
    int64_t i = gguf_find_key(g, key);
    if (i < 0) return MESH_ENOTFOUND;
    *kv = &g->kv[i];
    return 0;
}

int gguf_get_u32(const struct gguf *g, const char *key, uint32_t *out)
{
    const struct gguf_kv *kv;
    struct scalar s;
    int rc = find_kv(g, key, &kv);
    if (rc) return rc;
    if (!kv_scalar(kv, &s)) return MESH_EBADMODEL;
    if (s.is_float) {
        if (!(s.f >= 0 && s.f <= 4294967295.0) || s.f != (double)(uint32_t)s.f) return MESH_EBADMODEL;
        *out = (uint32_t)s.f;
        return 0;
    }
    if (s.is_neg || s.u > UINT32_MAX) return MESH_EBADMODEL;
    *out = (uint32_t)s.u;
    return 0;
}

int gguf_get_i64(const struct gguf *g, const char *key, int64_t *out)
{
    const struct gguf_kv *kv;
    struct scalar s;
    int rc = find_kv(g, key, &kv);
    if (rc) return rc;
    if (!kv_scalar(kv, &s)) return MESH_EBADMODEL;
    if (s.is_float) {
        /* 2^63 is exact as a double; the range check excludes it. */
        if (!(s.f >= -9223372036854775808.0 && s.f < 9223372036854775808.0) || s.f != (double)(int64_t)s.f)
            return MESH_EBADMODEL;
        *out = (int64_t)s.f;
        return 0;
    }
    if (!s.fits_i64) return MESH_EBADMODEL;
    *out = s.i;
    return 0;
}

int gguf_get_f32(const struct gguf *g, const char *key, float *out)
{
    const struct gguf_kv *kv;
    struct scalar s;
    int rc = find_kv(g, key, &kv);
    if (rc) return rc;
    if (kv->type == GGUF_VT_BOOL || !kv_scalar(kv, &s)) return MESH_EBADMODEL;
    /* Floats narrow (rounding) as any reader of an f64 hyper-parameter would want. */
    *out = (float)s.f;
    return 0;
}

int gguf_get_bool(const struct gguf *g, const char *key, bool *out)
{
    const struct gguf_kv *kv;
    struct scalar s;
    int rc = find_kv(g, key, &kv);
    if (rc) return rc;
    if (!kv_scalar(kv, &s) || s.is_float || s.is_neg || s.u > 1) return MESH_EBADMODEL;
    *out = s.u != 0;
    return 0;
}

int gguf_get_str(const struct gguf *g, const char *key, struct gguf_str *out)
{
    const struct gguf_kv *kv;
    int rc = find_kv(g, key, &kv);
    if (rc) return rc;
    if (kv->type != GGUF_VT_STRING) return MESH_EBADMODEL;
    out->ptr = (const char *)kv->data;
    out->len = kv->n;
    return 0;
}

uint32_t gguf_get_u32_or(const struct gguf *g, const char *key, uint32_t def)
{
    uint32_t v;
    return gguf_get_u32(g, key, &v) == 0 ? v : def;
}

float gguf_get_f32_or(const struct gguf *g, const char *key, float def)
{
    float v;
    return gguf_get_f32(g, key, &v) == 0 ? v : def;
}

char *gguf_get_str_dup(const struct gguf *g, const char *key)
{
    struct gguf_str s;
    if (gguf_get_str(g, key, &s) != 0 || s.len >= SIZE_MAX) return NULL;
    char *r = malloc((size_t)s.len + 1);
    if (!r) return NULL;
    if (s.len) memcpy(r, s.ptr, (size_t)s.len);
    r[s.len] = 0;
    return r;
}

int gguf_get_arr(const struct gguf *g, const char *key, enum gguf_vtype *elem_type, uint64_t *n,
                 const void **data)
{
    const struct gguf_kv *kv;
    int rc = find_kv(g, key, &kv);
    if (rc) return rc;
    if (kv->type != GGUF_VT_ARRAY) return MESH_EBADMODEL;
    *elem_type = kv->elem_type;
    *n = kv->n;
    *data = kv->data;
    return 0;
}

static void elem_str(const struct gguf_kv *kv, uint64_t j, struct gguf_str *out)
{
    uint64_t len;
    memcpy(&len, kv->elems[j], 8);
    out->ptr = (const char *)kv->elems[j] + 8;
    out->len = len;
}

int gguf_get_arr_str(const struct gguf *g, const char *key, uint64_t j, struct gguf_str *out)
{
    const struct gguf_kv *kv;
    int rc = find_kv(g, key, &kv);
    if (rc) return rc;
    if (kv->type != GGUF_VT_ARRAY || kv->elem_type != GGUF_VT_STRING) return MESH_EBADMODEL;
    if (j >= kv->n) return MESH_ERANGE;
    elem_str(kv, j, out);
    return 0;
}

int gguf_kv_scalar_f64(const struct gguf *g, int64_t i, double *out)
{
    struct scalar s;
    if (i < 0 || i >= g->n_kv) return MESH_ENOTFOUND;
    if (!kv_scalar(&g->kv[i], &s)) return MESH_EBADMODEL;
    *out = s.f;
    return 0;
}

int gguf_kv_str(const struct gguf *g, int64_t i, struct gguf_str *out)
{
    if (i < 0 || i >= g->n_kv) return MESH_ENOTFOUND;
    if (g->kv[i].type != GGUF_VT_STRING) return MESH_EBADMODEL;
    out->ptr = (const char *)g->kv[i].data;
    out->len = g->kv[i].n;
    return 0;
}

int gguf_kv_arr_info(const struct gguf *g, int64_t i, enum gguf_vtype *elem_type, uint64_t *n)
{
    if (i < 0 || i >= g->n_kv) return MESH_ENOTFOUND;
    if (g->kv[i].type != GGUF_VT_ARRAY) return MESH_EBADMODEL;
    *elem_type = g->kv[i].elem_type;
    *n = g->kv[i].n;
    return 0;
}

/* ---- tensors ------------------------------------------------------------------------- */

int64_t gguf_tensor_count(const struct gguf *g)
{
    return g->n_tensors;
}

const struct gguf_tensor *gguf_tensor_at(const struct gguf *g, int64_t i)
{
    if (i < 0 || i >= g->n_tensors) return NULL;
    return &g->tensors[i];
}

const struct gguf_tensor *gguf_find_tensor(const struct gguf *g, const char *name)
{
    if (!g->t_hash || !name) return NULL;
    size_t n = strlen(name);
    size_t h = (size_t)hash_bytes(name, n) & (g->t_hash_cap - 1);
    for (;;) {
        int64_t i = g->t_hash[h];
        if (i < 0) return NULL;
        if (i < g->n_tensors && str_eq(g->tensors[i].name, name, n)) return &g->tensors[i];
        h = (h + 1) & (g->t_hash_cap - 1);
    }
}

/* ---- writer ----------------------------------------------------------------------------- */

struct wkv {
    char *key;
    enum gguf_vtype type;
    uint8_t *val; /* the value exactly as written after the type tag */
    size_t val_len;
};

struct wtensor {
    char *name;
    int type;
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    size_t row_bytes;
    int64_t n_rows;
    size_t size;
    uint64_t offset;
    const void *data;
};

struct gguf_writer {
    size_t alignment;
    struct wkv *kv;
    int64_t n_kv, cap_kv;
    struct wtensor *t;
    int64_t n_t, cap_t;
    bool whole; /* fill callers want each tensor in one call */
};

int gguf_writer_new(struct gguf_writer **out)
{
    *out = NULL;
    struct gguf_writer *w = calloc(1, sizeof *w);
    if (!w) return MESH_ENOMEM;
    w->alignment = GGUF_DEFAULT_ALIGNMENT;
    *out = w;
    return 0;
}

void gguf_writer_free(struct gguf_writer *w)
{
    if (!w) return;
    for (int64_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    for (int64_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w);
}

/* Sets key to (type, value bytes); takes ownership of val (freed on error too). */
static int writer_put(struct gguf_writer *w, const char *key, enum gguf_vtype type, uint8_t *val, size_t val_len)
{
    size_t klen = key ? strlen(key) : 0;
    if (klen == 0 || !utf8_valid((const uint8_t *)key, klen)) {
        free(val);
        return MESH_EINVAL;
    }
    if (!strcmp(key, "general.alignment")) {
        uint32_t a;
        if (type != GGUF_VT_U32 || val_len != 4) {
            free(val);
            return MESH_EINVAL;
        }
        memcpy(&a, val, 4);
        if (a == 0 || (a & (a - 1)) != 0 || a < 8) { /* the reader's rule */
            free(val);
            return MESH_EINVAL;
        }
        w->alignment = a;
    }
    for (int64_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, key) != 0) continue;
        free(w->kv[i].val);
        w->kv[i].type = type;
        w->kv[i].val = val;
        w->kv[i].val_len = val_len;
        return 0;
    }
    if (w->n_kv == w->cap_kv) {
        int64_t cap = w->cap_kv ? w->cap_kv * 2 : 32;
        struct wkv *nk = realloc(w->kv, (size_t)cap * sizeof *nk);
        if (!nk) {
            free(val);
            return MESH_ENOMEM;
        }
        w->kv = nk;
        w->cap_kv = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(val);
        return MESH_ENOMEM;
    }
    w->kv[w->n_kv++] = (struct wkv){.key = k, .type = type, .val = val, .val_len = val_len};
    return 0;
}

static int writer_put_copy(struct gguf_writer *w, const char *key, enum gguf_vtype type, const void *v, size_t n)
{
    uint8_t *val = malloc(n ? n : 1);
    if (!val) return MESH_ENOMEM;
    if (n) memcpy(val, v, n);
    return writer_put(w, key, type, val, n);
}

int gguf_writer_set_alignment(struct gguf_writer *w, size_t alignment)
{
    if (alignment < 8 || (alignment & (alignment - 1)) != 0 || alignment > UINT32_MAX) return MESH_EINVAL;
    if (alignment == GGUF_DEFAULT_ALIGNMENT) {
        /* The default needs no key; drop one copied from elsewhere. */
        for (int64_t i = 0; i < w->n_kv; i++) {
            if (strcmp(w->kv[i].key, "general.alignment") != 0) continue;
            free(w->kv[i].key);
            free(w->kv[i].val);
            memmove(&w->kv[i], &w->kv[i + 1], (size_t)(w->n_kv - i - 1) * sizeof *w->kv);
            w->n_kv--;
            break;
        }
        w->alignment = alignment;
        return 0;
    }
    return gguf_writer_set_u32(w, "general.alignment", (uint32_t)alignment);
}

int gguf_writer_set_u32(struct gguf_writer *w, const char *key, uint32_t v)
{
    return writer_put_copy(w, key, GGUF_VT_U32, &v, 4);
}

int gguf_writer_set_i32(struct gguf_writer *w, const char *key, int32_t v)
{
    return writer_put_copy(w, key, GGUF_VT_I32, &v, 4);
}

int gguf_writer_set_f32(struct gguf_writer *w, const char *key, float v)
{
    return writer_put_copy(w, key, GGUF_VT_F32, &v, 4);
}

int gguf_writer_set_bool(struct gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    return writer_put_copy(w, key, GGUF_VT_BOOL, &b, 1);
}

int gguf_writer_set_str(struct gguf_writer *w, const char *key, const char *v)
{
    if (!v) return MESH_EINVAL;
    uint64_t len = strlen(v);
    uint8_t *val = malloc(8 + (size_t)len);
    if (!val) return MESH_ENOMEM;
    memcpy(val, &len, 8);
    memcpy(val + 8, v, (size_t)len);
    return writer_put(w, key, GGUF_VT_STRING, val, 8 + (size_t)len);
}

int gguf_writer_set_arr(struct gguf_writer *w, const char *key, enum gguf_vtype elem_type, const void *data,
                        uint64_t n)
{
    size_t es = vtype_size(elem_type);
    if (es == 0 || (n > 0 && !data)) return MESH_EINVAL;
    if (n > (SIZE_MAX - 12) / es) return MESH_ERANGE;
    size_t len = 12 + (size_t)n * es;
    uint8_t *val = malloc(len);
    if (!val) return MESH_ENOMEM;
    uint32_t et = (uint32_t)elem_type;
    memcpy(val, &et, 4);
    memcpy(val + 4, &n, 8);
    if (n) memcpy(val + 12, data, (size_t)n * es);
    return writer_put(w, key, GGUF_VT_ARRAY, val, len);
}

int gguf_writer_set_arr_str(struct gguf_writer *w, const char *key, const char *const *v, uint64_t n)
{
    size_t len = 12;
    for (uint64_t j = 0; j < n; j++) {
        if (!v[j]) return MESH_EINVAL;
        size_t sl = strlen(v[j]);
        if (sl > SIZE_MAX - 8 - len) return MESH_ERANGE;
        len += 8 + sl;
    }
    uint8_t *val = malloc(len);
    if (!val) return MESH_ENOMEM;
    uint32_t et = GGUF_VT_STRING;
    memcpy(val, &et, 4);
    memcpy(val + 4, &n, 8);
    size_t pos = 12;
    for (uint64_t j = 0; j < n; j++) {
        uint64_t sl = strlen(v[j]);
        memcpy(val + pos, &sl, 8);
        memcpy(val + pos + 8, v[j], (size_t)sl);
        pos += 8 + (size_t)sl;
    }
    return writer_put(w, key, GGUF_VT_ARRAY, val, len);
}

int gguf_writer_set_arr_gstr(struct gguf_writer *w, const char *key, const struct gguf_str *v, uint64_t n)
{
    size_t len = 12;
    for (uint64_t j = 0; j < n; j++) {
        if (!v[j].ptr && v[j].len) return MESH_EINVAL;
        if (v[j].len > SIZE_MAX - 8 - len) return MESH_ERANGE;
        len += 8 + (size_t)v[j].len;
    }
    uint8_t *val = malloc(len);
    if (!val) return MESH_ENOMEM;
    uint32_t et = GGUF_VT_STRING;
    memcpy(val, &et, 4);
    memcpy(val + 4, &n, 8);
    size_t pos = 12;
    for (uint64_t j = 0; j < n; j++) {
        memcpy(val + pos, &v[j].len, 8);
        if (v[j].len) memcpy(val + pos + 8, v[j].ptr, (size_t)v[j].len);
        pos += 8 + (size_t)v[j].len;
    }
    return writer_put(w, key, GGUF_VT_ARRAY, val, len);
}

int gguf_writer_copy_kv(struct gguf_writer *w, const struct gguf *g, int64_t i)
{
    if (i < 0 || i >= g->n_kv) return MESH_ENOTFOUND;
    const struct gguf_kv *kv = &g->kv[i];
    /* Keys were checked as UTF-8 at open, but may hold a NUL byte: refuse those. */
    if (memchr(kv->key.ptr, 0, (size_t)kv->key.len)) return MESH_EINVAL;
    char *key = malloc((size_t)kv->key.len + 1);
    if (!key) return MESH_ENOMEM;
    memcpy(key, kv->key.ptr, (size_t)kv->key.len);
    key[kv->key.len] = 0;
    int rc = writer_put_copy(w, key, kv->type, kv->raw, kv->raw_len);
    free(key);
    return rc;
}

int64_t gguf_writer_add_tensor(struct gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne,
                               const void *data)
{
    size_t nlen = name ? strlen(name) : 0;
    if (nlen == 0 || !utf8_valid((const uint8_t *)name, nlen) || n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return MESH_EINVAL;
    for (int64_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) return MESH_EINVAL;
    struct wtensor t = {.type = type, .n_dims = n_dims, .data = data};
    int64_t n_rows = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        int64_t v = d < n_dims ? ne[d] : 1;
        if (v <= 0) return MESH_EINVAL;
        if (d > 0) {
            if (n_rows > INT64_MAX / v) return MESH_ERANGE;
            n_rows *= v;
        }
        t.ne[d] = v;
    }
    if (t.ne[0] > INT64_MAX / n_rows) return MESH_ERANGE;
    t.row_bytes = quant_row_bytes(type, t.ne[0]);
    if (t.row_bytes == 0) return MESH_EINVAL; /* unknown type or row not whole blocks */
    if ((uint64_t)n_rows > SIZE_MAX / t.row_bytes) return MESH_ERANGE;
    t.n_rows = n_rows;
    t.size = t.row_bytes * (size_t)n_rows;
    if (w->n_t == w->cap_t) {
        int64_t cap = w->cap_t ? w->cap_t * 2 : 64;
        struct wtensor *nt = realloc(w->t, (size_t)cap * sizeof *nt);
        if (!nt) return MESH_ENOMEM;
        w->t = nt;
        w->cap_t = cap;
    }
    t.name = strdup(name);
    if (!t.name) return MESH_ENOMEM;
    w->t[w->n_t] = t;
    return w->n_t++;
}

/* Buffered output to the temp file; remembers the first error. */
struct wout {
    FILE *f;
    uint64_t pos;
    int rc;
};

static void wout_put(struct wout *o, const void *p, size_t n)
{
    if (o->rc || n == 0) return;
    if (fwrite(p, 1, n, o->f) != n) o->rc = MESH_EIO;
    o->pos += n;
}

static void wout_pad(struct wout *o, size_t alignment)
{
    static const uint8_t zeros[64];
    size_t pad = (size_t)((alignment - o->pos % alignment) % alignment);
    while (pad > 0) {
        size_t n = pad < sizeof zeros ? pad : sizeof zeros;
        wout_put(o, zeros, n);
        pad -= n;
    }
}

static void write_header(struct gguf_writer *w, struct wout *o)
{
    uint32_t version = 3;
    uint64_t n_t = (uint64_t)w->n_t, n_kv = (uint64_t)w->n_kv;
    wout_put(o, GGUF_MAGIC, 4);
    wout_put(o, &version, 4);
    wout_put(o, &n_t, 8);
    wout_put(o, &n_kv, 8);
    for (int64_t i = 0; i < w->n_kv; i++) {
        uint64_t kl = strlen(w->kv[i].key);
        uint32_t t = (uint32_t)w->kv[i].type;
        wout_put(o, &kl, 8);
        wout_put(o, w->kv[i].key, (size_t)kl);
        wout_put(o, &t, 4);
        wout_put(o, w->kv[i].val, w->kv[i].val_len);
    }
    uint64_t off = 0;
    for (int64_t i = 0; i < w->n_t; i++) {
        struct wtensor *t = &w->t[i];
        uint64_t nl = strlen(t->name);
        uint32_t nd = (uint32_t)t->n_dims, type = (uint32_t)t->type;
        wout_put(o, &nl, 8);
        wout_put(o, t->name, (size_t)nl);
        wout_put(o, &nd, 4);
        wout_put(o, t->ne, 8 * (size_t)t->n_dims);
        wout_put(o, &type, 4);
        t->offset = off;
        wout_put(o, &off, 8);
        off += t->size + (w->alignment - t->size % w->alignment) % w->alignment;
    }
    /* Vocab-only files (no tensors) end right after the header, as llama.cpp's do. */
    if (w->n_t > 0) wout_pad(o, w->alignment);
}

/* Rows per fill call: about 16 MiB, at least one row (all rows in whole mode). */
static int64_t chunk_rows(const struct gguf_writer *w, const struct wtensor *t)
{
    if (w->whole) return t->n_rows;
    int64_t r = (int64_t)((16u << 20) / t->row_bytes);
    if (r < 1) r = 1;
    return r < t->n_rows ? r : t->n_rows;
}

static int write_data(struct gguf_writer *w, struct wout *o, gguf_tensor_fill_rows_fn fill, void *user,
                      char *err, size_t err_cap)
{
    uint8_t *buf = NULL;
    size_t buf_cap = 0;
    int rc = 0;
    for (int64_t i = 0; i < w->n_t && !rc; i++) {
        struct wtensor *t = &w->t[i];
        if (t->data) {
            wout_put(o, t->data, t->size);
        } else if (!fill) {
            rc = err_set(err, err_cap, MESH_EINVAL, "tensor '%s' has no data and no fill callback", t->name);
            break;
        } else {
            int64_t step = chunk_rows(w, t);
            size_t need = (size_t)step * t->row_bytes;
            if (need > buf_cap) {
                free(buf);
                buf = malloc(need);
                buf_cap = buf ? need : 0;
                if (!buf) {
                    rc = err_set(err, err_cap, MESH_ENOMEM, "out of memory for tensor '%s'", t->name);
                    break;
                }
            }
            for (int64_t r0 = 0; r0 < t->n_rows && !rc; r0 += step) {
                int64_t nr = t->n_rows - r0 < step ? t->n_rows - r0 : step;
                size_t n = (size_t)nr * t->row_bytes;
                rc = fill(user, i, r0, nr, buf, n);
                if (rc) {
                    if (err && err_cap && !err[0])
                        err_set(err, err_cap, rc, "tensor '%s': %s", t->name, err_str(rc));
                    break;
                }
                wout_put(o, buf, n);
            }
        }
        /* Padding after every tensor, the last included, as llama.cpp writes it. */
        wout_pad(o, w->alignment);
        if (!rc && o->rc) rc = o->rc;
    }
    free(buf);
    return rc;
}

int gguf_writer_write_rows(struct gguf_writer *w, const char *path, gguf_tensor_fill_rows_fn fill, void *user,
                           char *err, size_t err_cap)
{
    if (err && err_cap) err[0] = 0;
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp) return err_set(err, err_cap, MESH_ENOMEM, "%s: out of memory", path);
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    int rc = 0;
    struct wout o = {0};
    int fd = mkstemp(tmp);
    if (fd < 0) {
        rc = err_set(err, err_cap, MESH_EIO, "%s: cannot create temporary file: %s", path, strerror(errno));
        free(tmp);
        return rc;
    }
    fchmod(fd, 0644);
    o.f = fdopen(fd, "wb");
    if (!o.f) {
        close(fd);
        rc = err_set(err, err_cap, MESH_EIO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    write_header(w, &o);
    rc = o.rc ? o.rc : write_data(w, &o, fill, user, err, err_cap);
    if (!rc && fflush(o.f) != 0) rc = MESH_EIO;
    if (!rc && fsync(fileno(o.f)) != 0) rc = MESH_EIO;
    if (fclose(o.f) != 0 && !rc) rc = MESH_EIO;
    o.f = NULL;
    if (rc) {
        if (err && err_cap && !err[0]) err_set(err, err_cap, rc, "%s: write failed: %s", path, strerror(errno));
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        rc = err_set(err, err_cap, MESH_EIO, "%s: rename failed: %s", path, strerror(errno));
        goto fail;
    }
    free(tmp);
    return 0;
fail:
    unlink(tmp);
    free(tmp);
    return rc;
}

/* Adapts a whole-tensor fill to the row interface: only called with the whole tensor. */
struct whole_fill {
    gguf_tensor_fill_fn fill;
    void *user;
};

static int whole_fill_rows(void *user, int64_t i, int64_t row0, int64_t n_rows, void *dst, size_t size)
{
    (void)row0;
    (void)n_rows;
    struct whole_fill *wf = user;
    return wf->fill(wf->user, i, dst, size);
}

int gguf_writer_write(struct gguf_writer *w, const char *path, gguf_tensor_fill_fn fill, void *user, char *err,
                      size_t err_cap)
{
    if (!fill) return gguf_writer_write_rows(w, path, NULL, NULL, err, err_cap);
    /* A whole-tensor callback needs the whole tensor in one call: lift the chunk limit by
     * handing tensors over one at a time through a buffer of their full size. */
    struct whole_fill wf = {fill, user};
    w->whole = true;
    int rc = gguf_writer_write_rows(w, path, whole_fill_rows, &wf, err, err_cap);
    w->whole = false;
    return rc;
}

int64_t gguf_writer_tensor_count(const struct gguf_writer *w)
{
    return w->n_t;
}

size_t gguf_writer_tensor_size(const struct gguf_writer *w, int64_t i)
{
    return i >= 0 && i < w->n_t ? w->t[i].size : 0;
}
