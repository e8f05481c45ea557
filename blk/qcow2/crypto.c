/* Encrypted qcow2 images (crypt_method 1, legacy AES; 2, LUKS in a header area the
 * CRYPTO extension points at; specs/qcow2.md §13): the LUKS1 header (big-endian, 592
 * bytes) parsed and checked at open as qemu checks it, qemu's "encrypt" info object, and
 * the refusal of data access without a key. Unlocking and decrypting: decrypt.c. */
#include "blk/qcow2/qcow2.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define LUKS_HDR 592
#define LUKS_SLOT_ACTIVE 0x00AC71F3u
#define LUKS_SLOT_INACTIVE 0x0000DEADu

#define BAD(...) vt_error_set(err, EINVAL, s->b->filename, "open", __VA_ARGS__)

static void field(char *dst, const uint8_t *src, size_t n)
{
	memcpy(dst, src, n);
	dst[n] = '\0';
}

static bool one_of(const char *s, const char *const *list)
{
	for (; *list; list++)
		if (!strcmp(s, *list))
			return true;
	return false;
}

/* qemu's cipher algorithm name for a LUKS cipher name and key size in bits. */
static bool cipher_alg(const char *name, unsigned bits, char *out, size_t n)
{
	static const char *const sized[] = { "aes", "serpent", "twofish", NULL };
	if (one_of(name, sized) && (bits == 128 || bits == 192 || bits == 256))
		return snprintf(out, n, "%.16s-%u", name, bits), true;
	if (!strcmp(name, "cast5") && bits == 128)
		return snprintf(out, n, "cast5-128"), true;
	if (!strcmp(name, "sm4") && bits == 128)
		return snprintf(out, n, "sm4"), true;
	return false;
}

int qcow2_luks_parse(struct qcow2 *s, struct qcow2_luks *l, struct vt_error *err)
{
	static const char *const hashes[] = { "md5", "sha1", "sha224", "sha256", "sha384",
	                                      "sha512", "ripemd160", "sm3", NULL };
	static const char *const modes[] = { "ecb", "cbc", "xts", "ctr", NULL };
	static const char *const ivgens[] = { "plain", "plain64", "essiv", NULL };
	uint8_t h[LUKS_HDR];
	int r;

	if (s->crypto_len < LUKS_HDR || s->crypto_off > INT64_MAX - s->crypto_len)
		return BAD("LUKS header area too small");
	if ((r = blk_file_pread(s->b->file, s->crypto_off, h, sizeof(h), err)) < 0)
		return r;
	if (memcmp(h, "LUKS\xba\xbe", 6))
		return BAD("Volume is not in LUKS format");
	if ((h[6] << 8 | h[7]) != 1)
		return BAD("LUKS version %u is not supported", (unsigned)(h[6] << 8 | h[7]));
	field(l->cipher, h + 8, 32);
	field(l->mode, h + 40, 32);
	field(l->hash, h + 72, 32);
	l->payload = qcow2_be32(h + 104);
	l->key_bytes = qcow2_be32(h + 108);
	l->mk_iters = qcow2_be32(h + 164);
	memcpy(l->mk_digest, h + 112, sizeof(l->mk_digest));
	memcpy(l->mk_salt, h + 132, sizeof(l->mk_salt));
	field(l->uuid, h + 168, 40);
	for (int i = 0; i < QCOW2_LUKS_SLOTS; i++) {
		const uint8_t *p = h + 208 + i * 48;
		uint32_t state = qcow2_be32(p);
		if (state != LUKS_SLOT_ACTIVE && state != LUKS_SLOT_INACTIVE)
			return BAD("Keyslot %d state (active/disable) is corrupted", i);
		l->slot[i].active = state == LUKS_SLOT_ACTIVE;
		l->slot[i].iters = qcow2_be32(p + 4);
		l->slot[i].key_off = qcow2_be32(p + 40);
		l->slot[i].stripes = qcow2_be32(p + 44);
		memcpy(l->slot[i].salt, p + 8, sizeof(l->slot[i].salt));
	}
	/* "xts-plain64", "cbc-essiv:sha256": mode, IV generator, its hash. */
	const char *dash = strchr(l->mode, '-');
	if (!dash)
		return BAD("Unexpected cipher mode string format '%s'", l->mode);
	snprintf(l->cmode, sizeof(l->cmode), "%.*s", (int)(dash - l->mode), l->mode);
	const char *colon = strchr(dash + 1, ':');
	snprintf(l->ivgen, sizeof(l->ivgen), "%.*s",
	         (int)(colon ? (size_t)(colon - dash - 1) : strlen(dash + 1)), dash + 1);
	snprintf(l->ivhash, sizeof(l->ivhash), "%s", colon ? colon + 1 : "");
	if (!one_of(l->cmode, modes))
		return BAD("Cipher mode '%s' is not supported", l->cmode);
	if (!one_of(l->ivgen, ivgens) || (l->ivhash[0] && !one_of(l->ivhash, hashes)))
		return BAD("IV generator '%s' is not supported", dash + 1);
	unsigned bits = l->key_bytes * 8 / (!strcmp(l->cmode, "xts") ? 2 : 1);
	if (!cipher_alg(l->cipher, bits, l->alg, sizeof(l->alg)))
		return BAD("Algorithm '%s' with key size %u bytes not supported", l->cipher,
		           l->key_bytes);
	if (!one_of(l->hash, hashes))
		return BAD("Hash algorithm '%s' not supported", l->hash);
	return 0;
}

int qcow2_check_crypto_header(struct qcow2 *s, struct vt_error *err)
{
	if (s->crypt_method == 2 && !s->has_crypto_ext)
		return BAD("Missing CRYPTO header for crypt method 2");
	if (s->crypt_method != 2 && s->has_crypto_ext)
		return BAD("CRYPTO header extension only expected with LUKS encryption method");
	if (s->crypt_method == 2) {
		struct qcow2_luks l;
		return qcow2_luks_parse(s, &l, err);
	}
	return 0;
}

struct vt_json *qcow2_crypto_info(struct qcow2 *s)
{
	struct vt_json *o = vt_json_object();
	if (s->crypt_method == 1) {
		vt_json_set_str(o, "format", "aes");
		return o;
	}
	struct qcow2_luks l;
	if (qcow2_luks_parse(s, &l, NULL) < 0) {
		/* Checked at open: only a file changed under us gets here. */
		vt_json_set_str(o, "format", "luks");
		return o;
	}
	vt_json_set_str(o, "ivgen-alg", l.ivgen);
	if (l.ivhash[0])
		vt_json_set_str(o, "ivgen-hash-alg", l.ivhash);
	vt_json_set_str(o, "hash-alg", l.hash);
	vt_json_set_str(o, "cipher-alg", l.alg);
	vt_json_set_str(o, "uuid", l.uuid);
	vt_json_set_str(o, "format", "luks");
	vt_json_set_str(o, "cipher-mode", l.cmode);
	struct vt_json *slots = vt_json_array();
	for (int i = 0; i < QCOW2_LUKS_SLOTS; i++) {
		struct vt_json *sl = vt_json_object();
		vt_json_set_bool(sl, "active", l.slot[i].active);
		if (l.slot[i].active) {
			vt_json_set_int(sl, "iters", l.slot[i].iters);
			vt_json_set_int(sl, "stripes", l.slot[i].stripes);
		}
		vt_json_set_int(sl, "key-offset", (int64_t)l.slot[i].key_off * 512);
		vt_json_append(slots, sl);
	}
	vt_json_set(o, "slots", slots);
	vt_json_set_int(o, "payload-offset", (int64_t)l.payload * 512);
	vt_json_set_int(o, "master-key-iters", l.mk_iters);
	return o;
}

int qcow2_crypto_refuse(struct qcow2 *s, const char *what, struct vt_error *err)
{
	return vt_error_set(err, ENOTSUP, s->b->filename, what, "the image is encrypted (%s): "
	                    "%s", s->crypt_method == 1 ? "AES" : "LUKS",
	                    s->b->writable ? "vtool reads encrypted images but does not write them"
	                                   : "Parameter 'encrypt.key-secret' is required for "
	                                     "cipher (--image-opts ...,encrypt.key-secret=ID "
	                                     "--object secret,id=ID,...)");
}
