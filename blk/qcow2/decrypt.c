/* Reading encrypted qcow2 images with the key the user names (qemu's
 * encrypt.key-secret): LUKS1 key slots unlocked as the LUKS1 specification says
 * (PBKDF2 of the passphrase, the slot's key material decrypted, the anti-forensic
 * merge, the master key checked against its digest), legacy AES from the password; then
 * every 512-byte sector of a data cluster decrypted as it is read. The IV is the
 * sector's number: of the host file for LUKS (qemu's crypt_physical_offset), of the
 * guest disk for legacy AES. vtool does not write encrypted images. Ciphers: libgcrypt. */
#include "blk/qcow2/qcow2.h"

#include <errno.h>
#include <gcrypt.h>
#include <stdlib.h>
#include <string.h>

#define SECTOR 512
#define MK_DIGEST 20

enum ivgen { IV_PLAIN, IV_PLAIN64, IV_ESSIV };

struct qcow2_decrypt {
	pthread_mutex_t lock;        /* a libgcrypt handle is not for two threads at once */
	gcry_cipher_hd_t data;       /* the master key's cipher */
	gcry_cipher_hd_t essiv;      /* ESSIV's IV cipher, keyed by the hash of the key */
	enum ivgen ivgen;
	size_t block;                /* the cipher's block size (the IV's length) */
	bool physical;               /* IVs count host sectors (LUKS), else guest sectors */
};

static int md_algo(const char *name)
{
	static const struct { const char *name; int algo; } m[] = {
		{ "md5", GCRY_MD_MD5 }, { "sha1", GCRY_MD_SHA1 }, { "sha224", GCRY_MD_SHA224 },
		{ "sha256", GCRY_MD_SHA256 }, { "sha384", GCRY_MD_SHA384 },
		{ "sha512", GCRY_MD_SHA512 }, { "ripemd160", GCRY_MD_RMD160 },
	};
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
		if (!strcmp(name, m[i].name))
			return m[i].algo;
	return 0;
}

/* A cipher for alg ("aes", "serpent", "twofish", "cast5") with a key of bits. */
static int cipher_algo(const char *alg, unsigned bits)
{
	if (!strcmp(alg, "aes"))
		return bits == 128 ? GCRY_CIPHER_AES : bits == 192 ? GCRY_CIPHER_AES192
		       : bits == 256 ? GCRY_CIPHER_AES256 : 0;
	if (!strcmp(alg, "serpent"))
		return bits == 128 ? GCRY_CIPHER_SERPENT128 : bits == 192 ? GCRY_CIPHER_SERPENT192
		       : bits == 256 ? GCRY_CIPHER_SERPENT256 : 0;
	if (!strcmp(alg, "twofish"))
		return bits == 128 ? GCRY_CIPHER_TWOFISH128 : bits == 256 ? GCRY_CIPHER_TWOFISH : 0;
	if (!strcmp(alg, "cast5"))
		return bits == 128 ? GCRY_CIPHER_CAST5 : 0;
	return 0;
}

static void free_dec(struct qcow2_decrypt *d)
{
	if (!d)
		return;
	gcry_cipher_close(d->data);
	gcry_cipher_close(d->essiv);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

void qcow2_decrypt_free(struct qcow2 *s)
{
	free_dec(s->dec);
	s->dec = NULL;
}

/* The cipher state for key under the LUKS header's cipher, mode and IV generator. */
static int make_dec(const struct qcow2_luks *l, const uint8_t *key, struct qcow2_decrypt **out)
{
	bool xts = !strcmp(l->cmode, "xts");
	int algo = cipher_algo(l->cipher, l->key_bytes * 8 / (xts ? 2 : 1));
	int mode = xts ? GCRY_CIPHER_MODE_XTS : !strcmp(l->cmode, "cbc") ? GCRY_CIPHER_MODE_CBC
	         : !strcmp(l->cmode, "ecb") ? GCRY_CIPHER_MODE_ECB
	         : !strcmp(l->cmode, "ctr") ? GCRY_CIPHER_MODE_CTR : 0;
	struct qcow2_decrypt *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	pthread_mutex_init(&d->lock, NULL);
	d->ivgen = !strcmp(l->ivgen, "plain") ? IV_PLAIN : !strcmp(l->ivgen, "essiv") ? IV_ESSIV
	         : IV_PLAIN64;
	d->physical = true;
	if (!algo || !mode || gcry_cipher_open(&d->data, algo, mode, 0) ||
	    gcry_cipher_setkey(d->data, key, l->key_bytes)) {
		free_dec(d);
		return -ENOTSUP;
	}
	d->block = gcry_cipher_get_algo_blklen(algo);
	if (d->ivgen == IV_ESSIV) {
		/* ESSIV: IV = E_{H(key)}(sector), the same cipher keyed by the digest. */
		int md = md_algo(l->ivhash);
		unsigned dlen = md ? gcry_md_get_algo_dlen(md) : 0;
		uint8_t h[64];
		int ealgo = dlen && dlen <= sizeof(h) ? cipher_algo(l->cipher, dlen * 8) : 0;
		if (!ealgo) {
			free_dec(d);
			return -ENOTSUP;
		}
		gcry_md_hash_buffer(md, h, key, l->key_bytes);
		if (gcry_cipher_open(&d->essiv, ealgo, GCRY_CIPHER_MODE_ECB, 0) ||
		    gcry_cipher_setkey(d->essiv, h, dlen)) {
			free_dec(d);
			return -ENOTSUP;
		}
	}
	*out = d;
	return 0;
}

/* Decrypt n sectors in place, the first numbered sector. */
static int decrypt_sectors(struct qcow2_decrypt *d, uint64_t sector, uint8_t *buf, size_t n)
{
	for (size_t i = 0; i < n; i++, sector++) {
		uint8_t iv[32] = { 0 };
		uint64_t v = d->ivgen == IV_PLAIN ? (uint32_t)sector : sector;
		for (int k = 0; k < 8; k++)
			iv[k] = (uint8_t)(v >> (8 * k));
		if (d->ivgen == IV_ESSIV && gcry_cipher_encrypt(d->essiv, iv, d->block, NULL, 0))
			return -EIO;
		if (gcry_cipher_setiv(d->data, iv, d->block) ||
		    gcry_cipher_decrypt(d->data, buf + i * SECTOR, SECTOR, NULL, 0))
			return -EIO;
	}
	return 0;
}

/* LUKS's anti-forensic diffusion: each digest-sized piece replaced by H(index || piece). */
static void af_diffuse(int md, uint8_t *buf, size_t len)
{
	size_t dlen = gcry_md_get_algo_dlen(md);
	uint8_t h[64], in[4 + 64];
	for (size_t i = 0, off = 0; off < len; i++, off += dlen) {
		size_t n = len - off < dlen ? len - off : dlen;
		in[0] = (uint8_t)(i >> 24), in[1] = (uint8_t)(i >> 16), in[2] = (uint8_t)(i >> 8),
		in[3] = (uint8_t)i;
		memcpy(in + 4, buf + off, n);
		gcry_md_hash_buffer(md, h, in, 4 + n);
		memcpy(buf + off, h, n);
	}
}

/* Try one key slot: the master key into mk when the passphrase opens it. */
static int try_slot(struct qcow2 *s, const struct qcow2_luks *l, int i, const uint8_t *pw,
                    size_t pwlen, uint8_t *mk, struct vt_error *err)
{
	int md = md_algo(l->hash);
	size_t kb = l->key_bytes, stripes = l->slot[i].stripes;
	size_t len = (kb * stripes + SECTOR - 1) / SECTOR * SECTOR;
	uint8_t slot_key[128], digest[MK_DIGEST];
	uint8_t *km = malloc(len), *acc = calloc(1, kb);
	struct qcow2_decrypt *d = NULL;
	int r = -EACCES;

	if (!km || !acc) {
		r = vt_error_set(err, ENOMEM, s->b->filename, "open", NULL);
		goto out;
	}
	if (gcry_md_get_algo_dlen(md) > 64 || (uint64_t)l->slot[i].key_off * SECTOR + len >
	                                          s->crypto_len) {
		r = vt_error_set(err, EINVAL, s->b->filename, "open",
		                 "LUKS key slot %d lies outside the header area", i);
		goto out;
	}
	if ((r = blk_file_pread(s->b->file, s->crypto_off + (uint64_t)l->slot[i].key_off * SECTOR,
	                        km, len, err)) < 0)
		goto out;
	r = -EACCES;
	if (gcry_kdf_derive(pw, pwlen, GCRY_KDF_PBKDF2, md, l->slot[i].salt,
	                    sizeof(l->slot[i].salt), l->slot[i].iters, kb, slot_key) ||
	    make_dec(l, slot_key, &d) < 0 || decrypt_sectors(d, 0, km, len / SECTOR) < 0)
		goto out;
	for (size_t k = 0; k + 1 < stripes; k++) {
		for (size_t j = 0; j < kb; j++)
			acc[j] ^= km[k * kb + j];
		af_diffuse(md, acc, kb);
	}
	for (size_t j = 0; j < kb; j++)
		mk[j] = acc[j] ^ km[(stripes - 1) * kb + j];
	if (!gcry_kdf_derive(mk, kb, GCRY_KDF_PBKDF2, md, l->mk_salt, sizeof(l->mk_salt),
	                     l->mk_iters, MK_DIGEST, digest) &&
	    !memcmp(digest, l->mk_digest, MK_DIGEST))
		r = 0;
out:
	free_dec(d);
	free(km);
	free(acc);
	memset(slot_key, 0, sizeof(slot_key));
	return r;
}

static int unlock_luks(struct qcow2 *s, const uint8_t *pw, size_t len, struct vt_error *err)
{
	struct qcow2_luks l;
	uint8_t mk[128];
	int r = qcow2_luks_parse(s, &l, err);
	if (r < 0)
		return r;
	if (l.key_bytes > sizeof(mk) || !md_algo(l.hash))
		return vt_error_set(err, ENOTSUP, s->b->filename, "open",
		                    "LUKS cipher %s-%s with hash %s is not supported", l.cipher, l.mode,
		                    l.hash);
	r = -EACCES;
	for (int i = 0; i < QCOW2_LUKS_SLOTS && r == -EACCES; i++)
		if (l.slot[i].active && l.slot[i].stripes)
			r = try_slot(s, &l, i, pw, len, mk, err);
	if (r == -EACCES)
		r = vt_error_set(err, EACCES, s->b->filename, "open",
		                 "Invalid password, cannot unlock any keyslot");
	if (r == 0 && make_dec(&l, mk, &s->dec) < 0)
		r = vt_error_set(err, ENOTSUP, s->b->filename, "open",
		                 "LUKS cipher %s-%s is not supported", l.cipher, l.mode);
	memset(mk, 0, sizeof(mk));
	return r;
}

/* Legacy AES: the password (up to 16 bytes, zero-padded) is the AES-128-CBC key. */
static int unlock_aes(struct qcow2 *s, const uint8_t *pw, size_t len, struct vt_error *err)
{
	struct qcow2_luks l = { .cipher = "aes", .cmode = "cbc", .ivgen = "plain64",
	                        .key_bytes = 16 };
	uint8_t key[16] = { 0 };
	memcpy(key, pw, len < 16 ? len : 16);
	int r = make_dec(&l, key, &s->dec);
	if (r < 0)
		return vt_error_set(err, -r, s->b->filename, "open", "AES-128-CBC unavailable");
	s->dec->physical = false;
	return 0;
}

int qcow2_decrypt_unlock(struct qcow2 *s, const uint8_t *key, size_t len, struct vt_error *err)
{
	if (!gcry_check_version(NULL))
		return vt_error_set(err, ENOTSUP, s->b->filename, "open", "libgcrypt unavailable");
	if (s->b->writable)
		return qcow2_crypto_refuse(s, "open for writing", err);
	return s->crypt_method == 1 ? unlock_aes(s, key, len, err) : unlock_luks(s, key, len, err);
}

/* Read the sectors covering the request, decrypt those that come from this image's own
 * data clusters (zeros, holes and backing data are plaintext already), copy out. */
int qcow2_decrypt_preadv(struct blk *b, uint64_t off, const struct iovec *iov, int iovcnt,
                         struct vt_error *err)
{
	struct qcow2 *s = b->opaque;
	uint64_t len = vt_iov_size(iov, iovcnt);
	uint64_t start = off / SECTOR * SECTOR, end = (off + len + SECTOR - 1) / SECTOR * SECTOR;
	if (end > b->size)
		end = b->size; /* a qcow2 disk is a whole number of sectors */
	uint8_t *buf = qcow2_alloc_buf(end - start);
	if (!buf)
		return vt_error_set(err, ENOMEM, b->filename, "read", NULL);
	struct iovec bv = { buf, end - start };
	int r = qcow2_preadv(b, start, &bv, 1, err);
	for (uint64_t pos = start; r == 0 && pos < end;) {
		/* This layer's status: data it stores has a host offset; what falls through to
		 * the backing file came from there decrypted (or plain) already. */
		struct blk_status st = { 0 };
		if ((r = qcow2_block_status(b, pos, end - pos, &st, err)) < 0)
			break;
		if ((st.flags & BLK_STATUS_DATA) && (st.flags & BLK_STATUS_OFFSET_VALID)) {
			uint64_t sector = s->dec->physical ? st.host_offset / SECTOR : pos / SECTOR;
			pthread_mutex_lock(&s->dec->lock);
				if (decrypt_sectors(s->dec, sector, buf + (pos - start), st.len / SECTOR) < 0)
				r = vt_error_set(err, EIO, b->filename, "decrypt", NULL);
			pthread_mutex_unlock(&s->dec->lock);
		}
		pos += st.len;
	}
	if (r == 0)
		vt_iov_from_buf(iov, iovcnt, 0, buf + (off - start), len);
	free(buf);
	return r;
}
