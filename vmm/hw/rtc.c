/* CMOS RTC and NVRAM (ports 0x70 index, 0x71 data). The clock reads the host's time
 * (UTC, or local time with -rtc base=localtime) plus whatever offset the guest set; the
 * NVRAM holds the memory sizes and CPU count firmware reads. No update interrupts: UIP
 * never shows, since every read is a consistent snapshot. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vmm/hw/devices.h"
#include "vmm/hw/rtc.h"
#include "vmm/vm.h"

#define RTC_INDEX 0x70
enum {
	RTC_SEC = 0x00, RTC_MIN = 0x02, RTC_HOUR = 0x04, RTC_WDAY = 0x06, RTC_MDAY = 0x07,
	RTC_MON = 0x08, RTC_YEAR = 0x09, RTC_REG_A = 0x0a, RTC_REG_B = 0x0b, RTC_REG_C = 0x0c,
	RTC_REG_D = 0x0d, RTC_CENTURY = 0x32,
};
#define REG_B_BINARY 0x04
#define REG_B_24H    0x02

struct rtc {
	pthread_mutex_t lock;
	bool localtime;
	uint8_t index;
	uint8_t nvram[128];
	int64_t offset;          /* guest time minus host time, seconds */
};

static uint8_t to_bcd(int v) { return (uint8_t)(((v / 10) << 4) | (v % 10)); }
static int from_bcd(uint8_t v) { return (v >> 4) * 10 + (v & 0xf); }

static struct tm rtc_now(const struct rtc *r)
{
	time_t t = time(NULL) + (time_t)r->offset;
	struct tm tm;

	if (r->localtime)
		localtime_r(&t, &tm);
	else
		gmtime_r(&t, &tm);
	return tm;
}

static uint8_t rtc_encode(const struct rtc *r, int v)
{
	return (r->nvram[RTC_REG_B] & REG_B_BINARY) ? (uint8_t)v : to_bcd(v);
}

static uint8_t rtc_read_time(const struct rtc *r, uint8_t reg)
{
	struct tm tm = rtc_now(r);

	switch (reg) {
	case RTC_SEC: return rtc_encode(r, tm.tm_sec);
	case RTC_MIN: return rtc_encode(r, tm.tm_min);
	case RTC_HOUR:
		if (r->nvram[RTC_REG_B] & REG_B_24H)
			return rtc_encode(r, tm.tm_hour);
		/* 12-hour mode: 12, 1..11 with bit 7 for PM. */
		return (uint8_t)(rtc_encode(r, tm.tm_hour % 12 ? tm.tm_hour % 12 : 12) |
		                 (tm.tm_hour >= 12 ? 0x80 : 0));
	case RTC_WDAY: return rtc_encode(r, tm.tm_wday + 1);
	case RTC_MDAY: return rtc_encode(r, tm.tm_mday);
	case RTC_MON: return rtc_encode(r, tm.tm_mon + 1);
	case RTC_YEAR: return rtc_encode(r, tm.tm_year % 100);
	default: return rtc_encode(r, (tm.tm_year + 1900) / 100); /* century */
	}
}

/* The guest sets one field of the clock: keep the rest, move the offset. */
static void rtc_write_time(struct rtc *r, uint8_t reg, uint8_t v)
{
	struct tm tm = rtc_now(r);
	int x = (r->nvram[RTC_REG_B] & REG_B_BINARY) ? v : from_bcd(v & 0x7f);

	switch (reg) {
	case RTC_SEC: tm.tm_sec = x; break;
	case RTC_MIN: tm.tm_min = x; break;
	case RTC_HOUR: tm.tm_hour = x; break;
	case RTC_MDAY: tm.tm_mday = x; break;
	case RTC_MON: tm.tm_mon = x - 1; break;
	case RTC_YEAR: tm.tm_year = (tm.tm_year / 100) * 100 + x; break;
	default: return;
	}
	time_t host = time(NULL);
	time_t guest = r->localtime ? mktime(&tm) : timegm(&tm);
	if (guest != (time_t)-1)
		r->offset = (int64_t)(guest - host);
}

static bool rtc_is_clock(uint8_t reg)
{
	return reg <= RTC_YEAR && reg != 1 && reg != 3 && reg != 5;
}

static void rtc_io(void *opaque, uint64_t offset, uint8_t *data, unsigned len, bool is_write)
{
	struct rtc *r = opaque;

	pthread_mutex_lock(&r->lock);
	if (offset == 0) {
		if (is_write)
			r->index = data[0] & 0x7f; /* bit 7 is the NMI mask */
		else
			data[0] = r->index;
	} else if (is_write) {
		if (rtc_is_clock(r->index) || r->index == RTC_CENTURY)
			rtc_write_time(r, r->index, data[0]);
		else if (r->index == RTC_REG_A)
			r->nvram[RTC_REG_A] = data[0] & 0x7f; /* UIP is read-only */
		else if (r->index != RTC_REG_C && r->index != RTC_REG_D)
			r->nvram[r->index] = data[0];
	} else {
		if (rtc_is_clock(r->index) || r->index == RTC_CENTURY)
			data[0] = rtc_read_time(r, r->index);
		else
			data[0] = r->nvram[r->index];
		if (r->index == RTC_REG_C)
			r->nvram[RTC_REG_C] = 0; /* reading C acknowledges interrupts */
	}
	for (unsigned i = 1; i < len && !is_write; i++)
		data[i] = 0xff;
	pthread_mutex_unlock(&r->lock);
}

/* Memory sizes and CPU count where PC firmware looks for them. */
static void rtc_fill_nvram(struct rtc *r, const struct vm *vm)
{
	uint8_t *n = r->nvram;
	uint64_t above_1m = (vm->low_ram - (1 << 20)) >> 10;         /* KiB */
	uint64_t above_16m = vm->low_ram > (16 << 20) ? (vm->low_ram - (16 << 20)) >> 16 : 0;
	uint64_t above_4g = vm->high_ram >> 16;

	if (above_1m > 0xffff)
		above_1m = 0xffff;
	if (above_16m > 0xffff)
		above_16m = 0xffff;
	n[RTC_REG_A] = 0x26;
	n[RTC_REG_B] = REG_B_24H;
	n[RTC_REG_D] = 0x80;                       /* valid RAM and time */
	n[0x14] = 0x06;                            /* equipment: FPU, PS/2 mouse */
	n[0x15] = 640 & 0xff;
	n[0x16] = 640 >> 8;
	n[0x17] = n[0x30] = (uint8_t)above_1m;
	n[0x18] = n[0x31] = (uint8_t)(above_1m >> 8);
	n[0x34] = (uint8_t)above_16m;
	n[0x35] = (uint8_t)(above_16m >> 8);
	n[0x5b] = (uint8_t)above_4g;
	n[0x5c] = (uint8_t)(above_4g >> 8);
	n[0x5d] = (uint8_t)(above_4g >> 16);
	n[0x5f] = (uint8_t)(vm->nr_vcpus - 1);
}

static void rtc_destroy(void *opaque)
{
	struct rtc *r = opaque;

	pthread_mutex_destroy(&r->lock);
	free(r);
}

int rtc_init(struct vm *vm, struct vt_error *err)
{
	struct rtc *r = calloc(1, sizeof(*r));
	int ret;

	if (!r)
		return vt_error_set(err, ENOMEM, "rtc", "create", NULL);
	pthread_mutex_init(&r->lock, NULL);
	r->localtime = vm->cfg->rtc_localtime;
	rtc_fill_nvram(r, vm);
	if ((ret = vm_add_device(vm, "rtc", r, rtc_destroy, err)))
		return ret;
	return bus_register(&vm->pio, RTC_INDEX, 2, rtc_io, r, err);
}

void rtc_cmos_set(struct vm *vm, uint8_t index, uint8_t value)
{
	struct rtc *r = vm_device(vm, "rtc");

	if (!r || index >= sizeof(r->nvram))
		return;
	pthread_mutex_lock(&r->lock);
	r->nvram[index] = value;
	pthread_mutex_unlock(&r->lock);
}
