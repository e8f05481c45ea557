/* 16550A UART on COM1 (0x3f8, IRQ 4). Transmit is instantaneous (bytes go straight to
 * the output fd), so THR is always empty; receive has a FIFO fed by the console.
 * Loopback mode exists because Linux's 8250 probe checks it. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmm/hw/devices.h"
#include "vmm/keep.h"
#include "vmm/vm.h"

#define COM1_BASE 0x3f8
#define COM1_IRQ  4
#define RX_FIFO   1024

enum { UART_RBR_THR, UART_IER, UART_IIR_FCR, UART_LCR, UART_MCR, UART_LSR, UART_MSR, UART_SCR };

#define IER_RDI   0x01
#define IER_THRI  0x02
#define IIR_NONE  0x01
#define IIR_THRI  0x02
#define IIR_RDI   0x04
#define IIR_FIFO  0xc0
#define LCR_DLAB  0x80
#define MCR_OUT2  0x08
#define MCR_LOOP  0x10
#define LSR_DR    0x01
#define LSR_THRE  0x20
#define LSR_TEMT  0x40

struct serial {
	struct vm *vm;
	pthread_mutex_t lock;
	int out_fd;
	bool own_fd;
	uint8_t ier, fcr, lcr, mcr, scr, dll, dlm;
	bool thr_pending;     /* THR-empty interrupt not yet acknowledged */
	bool irq_level;
	uint8_t rx[RX_FIFO];
	unsigned rx_head, rx_len;
};

static uint8_t serial_iir(const struct serial *s)
{
	uint8_t fifo = (s->fcr & 1) ? IIR_FIFO : 0;

	if ((s->ier & IER_RDI) && s->rx_len)
		return fifo | IIR_RDI;
	if ((s->ier & IER_THRI) && s->thr_pending)
		return fifo | IIR_THRI;
	return fifo | IIR_NONE;
}

/* Called with the lock held after every state change. */
static void serial_update_irq(struct serial *s)
{
	bool level = !(serial_iir(s) & IIR_NONE) && (s->mcr & MCR_OUT2);

	if (level != s->irq_level) {
		s->irq_level = level;
		vm_irq_line(s->vm, COM1_IRQ, level);
	}
}

static void serial_rx_push(struct serial *s, uint8_t byte)
{
	if (s->rx_len == RX_FIFO)
		return; /* overrun: the byte is lost, as on hardware */
	s->rx[(s->rx_head + s->rx_len++) % RX_FIFO] = byte;
}

static void serial_tx(struct serial *s, uint8_t byte)
{
	if (s->mcr & MCR_LOOP) {
		serial_rx_push(s, byte);
	} else if (s->out_fd >= 0) {
		ssize_t n;
		do
			n = write(s->out_fd, &byte, 1);
		while (n < 0 && errno == EINTR);
	}
	s->thr_pending = true;
}

static uint8_t serial_msr(const struct serial *s)
{
	if (!(s->mcr & MCR_LOOP))
		return 0xb0; /* DCD, DSR, CTS: a cable is always attached */
	/* Loopback wires DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD. */
	return (uint8_t)(((s->mcr & 1) << 5) | ((s->mcr & 2) << 3) | ((s->mcr & 4) << 4) |
	                 ((s->mcr & 8) << 4));
}

static uint8_t serial_read(struct serial *s, unsigned reg)
{
	uint8_t v = 0;

	switch (reg) {
	case UART_RBR_THR:
		if (s->lcr & LCR_DLAB)
			return s->dll;
		if (s->rx_len) {
			v = s->rx[s->rx_head];
			s->rx_head = (s->rx_head + 1) % RX_FIFO;
			s->rx_len--;
		}
		return v;
	case UART_IER:
		return (s->lcr & LCR_DLAB) ? s->dlm : s->ier;
	case UART_IIR_FCR:
		v = serial_iir(s);
		if ((v & 0x0f) == IIR_THRI)
			s->thr_pending = false; /* reading IIR acknowledges THR empty */
		return v;
	case UART_LCR: return s->lcr;
	case UART_MCR: return s->mcr;
	case UART_LSR: return (uint8_t)(LSR_THRE | LSR_TEMT | (s->rx_len ? LSR_DR : 0));
	case UART_MSR: return serial_msr(s);
	default: return s->scr;
	}
}

static void serial_write(struct serial *s, unsigned reg, uint8_t v)
{
	switch (reg) {
	case UART_RBR_THR:
		if (s->lcr & LCR_DLAB)
			s->dll = v;
		else
			serial_tx(s, v);
		break;
	case UART_IER:
		if (s->lcr & LCR_DLAB) {
			s->dlm = v;
		} else {
			/* Enabling the THR interrupt while THR is empty raises it at once. */
			if ((v & IER_THRI) && !(s->ier & IER_THRI))
				s->thr_pending = true;
			s->ier = v & 0x0f;
		}
		break;
	case UART_IIR_FCR:
		s->fcr = v & 0xc9;
		if (v & 0x02)
			s->rx_len = 0; /* clear the receive FIFO */
		break;
	case UART_LCR: s->lcr = v; break;
	case UART_MCR: s->mcr = v & 0x1f; break;
	case UART_SCR: s->scr = v; break;
	default: break; /* LSR and MSR are read-only */
	}
}

static void serial_io(void *opaque, uint64_t offset, uint8_t *data, unsigned len,
                      bool is_write)
{
	struct serial *s = opaque;

	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < len; i++) {
		unsigned reg = (unsigned)(offset + i) & 7;
		if (is_write)
			serial_write(s, reg, data[i]);
		else
			data[i] = serial_read(s, reg);
	}
	serial_update_irq(s);
	pthread_mutex_unlock(&s->lock);
}

static void serial_input(void *opaque, const uint8_t *buf, size_t len)
{
	struct serial *s = opaque;

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < len; i++)
		serial_rx_push(s, buf[i]);
	serial_update_irq(s);
	pthread_mutex_unlock(&s->lock);
}

static void serial_destroy(void *opaque)
{
	struct serial *s = opaque;

	if (s->own_fd)
		close(s->out_fd);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

int serial_init(struct vm *vm, struct vt_error *err)
{
	const struct vm_config *cfg = vm->cfg;

	if (cfg->serial == VM_SERIAL_NONE)
		return 0;
	struct serial *s = calloc(1, sizeof(*s));
	if (!s)
		return vt_error_set(err, ENOMEM, "serial", "create", NULL);
	s->vm = vm;
	s->out_fd = STDOUT_FILENO;
	s->thr_pending = false;
	pthread_mutex_init(&s->lock, NULL);
	if (cfg->serial == VM_SERIAL_FILE) {
		/* Truncated at power-on only: a reboot goes on writing to the kept file (keep.h),
		 * as qemu keeps its file open. */
		s->out_fd = keep_open(cfg->serial_path, O_WRONLY | O_CREAT | O_TRUNC, 0644, NULL);
		if (s->out_fd < 0) {
			int e = -s->out_fd;
			serial_destroy(s);
			return vt_error_set(err, e, cfg->serial_path, "open serial output", NULL);
		}
		s->own_fd = true;
	}
	int ret = vm_add_device(vm, "serial", s, serial_destroy, err);
	if (ret)
		return ret;
	vm->input_fn = serial_input;
	vm->input_opaque = s;
	return bus_register(&vm->pio, COM1_BASE, 8, serial_io, s, err);
}
