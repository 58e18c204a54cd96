/* SPDX-License-Identifier: Apache-2.0 */
/*
 * GPU test workload for machines with a real NVIDIA GPU (built by nvcc,
 * not by CMake):
 *
 *   nvcc -O2 -o gpu_workload tests/workload/gpu_workload.cu
 *   gpu_workload --gib 2.5 --status /tmp/status [--seed N] [--devices all|0,1,...]
 *
 * Fills N GiB of device memory with value = pattern(index, seed), then
 * advances a counter in device memory about every 10 ms.  With --devices
 * the N GiB are split over those devices in the ratio 1:2:3... (so
 * nvidia-smi tells them apart after a restore that swaps GPUs); each holds
 * its own slice of the pattern and its own counter.  The status file gets one line, replaced
 * atomically:
 *
 *   counter=<n> mismatches=<m> gib=<N> pid=<pid> devices=<d>
 *
 * (counter: the smallest of the devices' counters; mismatches: their sum)
 *
 * once when ready, and again on every SIGUSR1, after a kernel has compared
 * all N GiB with the pattern.  After a checkpoint and restore, a counter
 * that went on growing and mismatches=0 show that the GPU state survived.
 * SIGUSR2 corrupts one element, so a test can see the check fail.  On a
 * CUDA error the file holds "error=<name>: <text> (<where>)" and the exit
 * status is 1.
 */
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <unistd.h>
#include <vector>

#include <cuda_runtime.h>

static const char *status_path;
static volatile sig_atomic_t want_report, want_corrupt;

static void on_usr1(int sig)
{
	(void)sig;
	want_report = 1;
}

static void on_usr2(int sig)
{
	(void)sig;
	want_corrupt = 1;
}

static void write_status(const char *line)
{
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", status_path, (int)getpid());
	FILE *f = fopen(tmp, "w");
	if (!f) {
		fprintf(stderr, "gpu_workload: cannot write '%s': %s\n", tmp, strerror(errno));
		exit(1);
	}
	fprintf(f, "%s\n", line);
	if (fclose(f) != 0 || rename(tmp, status_path) != 0) {
		fprintf(stderr, "gpu_workload: cannot write '%s': %s\n", status_path, strerror(errno));
		exit(1);
	}
}

static void check(cudaError_t e, const char *where)
{
	if (e == cudaSuccess)
		return;
	char line[512];
	snprintf(line, sizeof(line), "error=%s: %s (%s)", cudaGetErrorName(e), cudaGetErrorString(e), where);
	write_status(line);
	fprintf(stderr, "gpu_workload: %s\n", line + 6);
	exit(1);
}

__host__ __device__ static inline uint32_t pattern(uint64_t i, uint32_t seed)
{
	/* splitmix64 finaliser: every index gets an unrelated value */
	uint64_t x = i * 0x9E3779B97F4A7C15ull + seed;
	x ^= x >> 30;
	x *= 0xBF58476D1CE4E5B9ull;
	x ^= x >> 27;
	x *= 0x94D049BB133111EBull;
	x ^= x >> 31;
	return (uint32_t)x;
}

__global__ static void fill(uint32_t *p, size_t n, uint64_t base, uint32_t seed)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
		p[i] = pattern(base + i, seed);
}

__global__ static void verify(const uint32_t *p, size_t n, uint64_t base, uint32_t seed,
			      unsigned long long *mismatches)
{
	unsigned long long bad = 0;
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
		bad += p[i] != pattern(base + i, seed);
	for (int off = 16; off > 0; off /= 2)
		bad += __shfl_down_sync(0xffffffffu, bad, off);
	if ((threadIdx.x & 31) == 0 && bad)
		atomicAdd(mismatches, bad);
}

__global__ static void advance(unsigned long long *counter)
{
	*counter += 1;
}

struct chunk {
	uint32_t *p;
	size_t n;      /* elements */
	uint64_t base; /* index of p[0] in the whole pattern */
};

struct device {
	int ordinal;
	std::vector<chunk> chunks;
	unsigned long long *d_counter, *d_mismatches;
};

static int grid_for(size_t n)
{
	size_t blocks = (n + 255) / 256;
	return blocks > 4096 ? 4096 : (int)(blocks ? blocks : 1);
}

static void report(std::vector<device> &devs, uint32_t seed, const char *gib)
{
	unsigned long long counter = ~0ull, mismatches = 0;
	for (device &d : devs) {
		check(cudaSetDevice(d.ordinal), "cudaSetDevice");
		check(cudaMemset(d.d_mismatches, 0, sizeof(*d.d_mismatches)), "cudaMemset");
		for (const chunk &c : d.chunks)
			verify<<<grid_for(c.n), 256>>>(c.p, c.n, c.base, seed, d.d_mismatches);
		check(cudaGetLastError(), "verify");
	}
	for (device &d : devs) {
		unsigned long long m = 0, c = 0;
		check(cudaSetDevice(d.ordinal), "cudaSetDevice");
		check(cudaDeviceSynchronize(), "verify");
		check(cudaMemcpy(&m, d.d_mismatches, sizeof(m), cudaMemcpyDeviceToHost), "cudaMemcpy");
		check(cudaMemcpy(&c, d.d_counter, sizeof(c), cudaMemcpyDeviceToHost), "cudaMemcpy");
		mismatches += m;
		counter = c < counter ? c : counter;
	}
	char line[256];
	snprintf(line, sizeof(line), "counter=%llu mismatches=%llu gib=%s pid=%d devices=%zu", counter, mismatches,
		 gib, (int)getpid(), devs.size());
	write_status(line);
}

static void usage(void)
{
	fprintf(stderr, "usage: gpu_workload --gib N --status FILE [--seed N] [--devices all|0,1,...]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *gib_arg = NULL, *devices_arg = NULL;
	uint32_t seed = 0x5eed1234u;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--gib") == 0 && i + 1 < argc)
			gib_arg = argv[++i];
		else if (strcmp(argv[i], "--status") == 0 && i + 1 < argc)
			status_path = argv[++i];
		else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
			seed = (uint32_t)strtoul(argv[++i], NULL, 0);
		else if (strcmp(argv[i], "--devices") == 0 && i + 1 < argc)
			devices_arg = argv[++i];
		else
			usage();
	}
	if (!gib_arg || !status_path)
		usage();
	char *end;
	double gib = strtod(gib_arg, &end);
	if (*end || gib < 0)
		usage();

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);

	std::vector<device> devs;
	if (!devices_arg) {
		devs.push_back(device());
		check(cudaGetDevice(&devs[0].ordinal), "cudaGetDevice");
	} else if (strcmp(devices_arg, "all") == 0) {
		int n = 0;
		check(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
		for (int i = 0; i < n; i++) {
			devs.push_back(device());
			devs.back().ordinal = i;
		}
	} else {
		for (const char *p = devices_arg; *p;) {
			devs.push_back(device());
			devs.back().ordinal = (int)strtol(p, &end, 10);
			if (end == p || (*end && *end != ','))
				usage();
			p = *end ? end + 1 : end;
		}
	}

	if (devs.empty())
		usage();

	/* 1 GiB allocations: a failure names the size that did not fit */
	const size_t chunk_elems = (size_t)1 << 28;
	size_t total = (size_t)(gib * (double)(1ull << 30)) / sizeof(uint32_t);
	size_t weights = devs.size() * (devs.size() + 1) / 2, done_weight = 0;
	size_t next = 0; /* pattern index where the next device's slice starts */
	for (device &d : devs) {
		check(cudaSetDevice(d.ordinal), "cudaSetDevice");
		done_weight += (size_t)(&d - &devs[0]) + 1;
		size_t end_idx = (size_t)((double)total * (double)done_weight / (double)weights);
		for (size_t base = next; base < end_idx; base += chunk_elems) {
			chunk c;
			c.n = end_idx - base < chunk_elems ? end_idx - base : chunk_elems;
			c.base = base;
			check(cudaMalloc(&c.p, c.n * sizeof(uint32_t)), "cudaMalloc");
			fill<<<grid_for(c.n), 256>>>(c.p, c.n, c.base, seed);
			check(cudaGetLastError(), "fill");
			d.chunks.push_back(c);
		}
		next = end_idx;
		check(cudaMalloc(&d.d_counter, sizeof(*d.d_counter)), "cudaMalloc");
		check(cudaMalloc(&d.d_mismatches, sizeof(*d.d_mismatches)), "cudaMalloc");
		check(cudaMemset(d.d_counter, 0, sizeof(*d.d_counter)), "cudaMemset");
		check(cudaDeviceSynchronize(), "fill");
	}
	report(devs, seed, gib_arg);

	for (;;) {
		for (device &d : devs) {
			check(cudaSetDevice(d.ordinal), "cudaSetDevice");
			advance<<<1, 1>>>(d.d_counter);
			check(cudaGetLastError(), "advance");
		}
		for (device &d : devs) {
			check(cudaSetDevice(d.ordinal), "cudaSetDevice");
			check(cudaDeviceSynchronize(), "advance");
		}
		if (want_corrupt && !devs[0].chunks.empty()) {
			want_corrupt = 0;
			const chunk &c = devs[0].chunks[0];
			uint32_t bad = ~pattern(c.base + c.n / 2, seed);
			check(cudaSetDevice(devs[0].ordinal), "cudaSetDevice");
			check(cudaMemcpy(c.p + c.n / 2, &bad, sizeof(bad), cudaMemcpyHostToDevice), "cudaMemcpy");
		}
		if (want_report) {
			want_report = 0;
			report(devs, seed, gib_arg);
		}
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
