#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <linux/userfaultfd.h>
#include <fcntl.h>
#include <unistd.h>
#include <time.h>
#include <stdatomic.h>
static size_t total; static char *dst; static int uffd; static int mode; static atomic_size_t next;
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
#define CH (1<<20)
static void*w(void*a){ char*buf=aligned_alloc(4096,CH); memset(buf,7,CH);
 for(;;){ size_t i=atomic_fetch_add(&next,1); if(i*CH>=total) break; char*d=dst+i*CH;
  if(mode==0){ memcpy(d,buf,CH);} else { struct uffdio_copy c={.dst=(uint64_t)d,.src=(uint64_t)buf,.len=CH}; if(ioctl(uffd,UFFDIO_COPY,&c)){perror("copy");exit(1);} } }
 return 0;}
int main(int argc,char**argv){ total=(size_t)atoi(argv[1])<<20; int n=atoi(argv[2]); mode=atoi(argv[3]); int huge=argc>4&&atoi(argv[4]);
 dst=mmap(0,total,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS,-1,0); if(huge) madvise(dst,total,MADV_HUGEPAGE);
 if(mode){ uffd=syscall(SYS_userfaultfd,O_CLOEXEC); struct uffdio_api a={.api=UFFD_API}; ioctl(uffd,UFFDIO_API,&a);
  struct uffdio_register r={.range={(uint64_t)dst,total},.mode=UFFDIO_REGISTER_MODE_MISSING}; if(ioctl(uffd,UFFDIO_REGISTER,&r)){perror("reg");return 1;}}
 pthread_t t[64]; double t0=now(); for(int i=0;i<n;i++) pthread_create(&t[i],0,w,0); for(int i=0;i<n;i++) pthread_join(t[i],0);
 double s=now()-t0; printf("mode %s huge %d threads %d: %.3f s %.2f GB/s\n", mode?"uffdio_copy":"memcpy-fault",huge,n,s,total/s/1e9); return 0;}
