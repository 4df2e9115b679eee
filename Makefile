# meshllm - one build from the root.  `make` builds build/meshllm; `make check` runs the
# whole suite (plain build, then ASan+UBSan build); `make help` lists targets.
#
#   BUILD=dir     output folder (default build; use your own to build in parallel)
#   SAN=1         AddressSanitizer + UndefinedBehaviorSanitizer build
#   WERROR=1      warnings are errors (set automatically when CI=true)
#   CROSS=aarch64-linux-gnu-   cross-compile (NEON path); tests then run under qemu-user

BUILD ?= build
CROSS ?=
CC := $(CROSS)gcc
ifneq ($(CLANG),)
CC := clang
endif
SAN ?= 0
WERROR ?= 0
ifeq ($(CI),true)
WERROR := 1
endif
OPT ?= -O2

TARGET_ARCH := $(shell $(CC) -dumpmachine | cut -d- -f1)

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
ifeq ($(WERROR),1)
WARN += -Werror
endif
CPPFLAGS := -I. -I$(BUILD)/gen -D_GNU_SOURCE -MMD -MP
CFLAGS := -std=c11 $(OPT) -g -fno-strict-aliasing $(WARN)
LDFLAGS :=
ifeq ($(SAN),1)
CFLAGS += -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
LDFLAGS += -fsanitize=address,undefined
endif

# Debian package libraries (installed by scripts/setup.sh).
PKGS := libsodium libuv libmicrohttpd libcjson libcurl sqlite3 libprotobuf-c
ifeq ($(CROSS),)
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
else
PKG_CFLAGS :=
PKG_LIBS :=
endif
CPPFLAGS += $(PKG_CFLAGS)
LDLIBS := $(PKG_LIBS) -lm -lpthread

# ---- sources --------------------------------------------------------------------------
LIB_DIRS := core engine net node api
ifeq ($(CROSS),)
LIB_SRCS := $(wildcard $(addsuffix /*.c,$(LIB_DIRS)))
else
# Cross builds (NEON check) compile the engine only: the rest needs target libraries.
LIB_SRCS := $(wildcard core/*.c engine/*.c)
endif
ifneq ($(TARGET_ARCH),x86_64)
LIB_SRCS := $(filter-out %_avx2.c %_avx512.c %_shani.c,$(LIB_SRCS))
endif
ifneq ($(TARGET_ARCH),aarch64)
LIB_SRCS := $(filter-out %_neon.c,$(LIB_SRCS))
endif

# The static library stores objects by file name: two sources with the same name in
# different folders would silently replace each other.
DUP_NAMES := $(shell echo $(notdir $(LIB_SRCS)) | tr ' ' '\n' | sort | uniq -d)
ifneq ($(DUP_NAMES),)
$(error library sources share a file name: $(DUP_NAMES) (rename one; ar keeps only one member per name))
endif

# Generated sources: Unicode tables from Debian's unicode-data, the web console blob.
UNICODE_DIR ?= /usr/share/unicode
GEN_SRCS :=
ifneq ($(wildcard tools/gen_unicode.c),)
GEN_SRCS += $(BUILD)/gen/unicode_tables.c
endif
ifneq ($(wildcard tools/embed.c),)
ifneq ($(wildcard web/*),)
GEN_SRCS += $(BUILD)/gen/web_assets.c
endif
endif

# libp2p/meshllm protobuf messages: net/proto/*.proto -> $(BUILD)/gen/*.pb-c.[ch] (protoc-c).
PROTOS := $(wildcard net/proto/*.proto)
ifeq ($(CROSS),)
GEN_SRCS += $(PROTOS:net/proto/%.proto=$(BUILD)/gen/%.pb-c.c)
endif
PB_HDRS := $(PROTOS:net/proto/%.proto=$(BUILD)/gen/%.pb-c.h)

LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o) $(GEN_SRCS:%.c=%.o)
LIB := $(BUILD)/libmeshllm.a

CLI_SRCS := $(wildcard cli/*.c)
CLI_OBJS := $(CLI_SRCS:%.c=$(BUILD)/%.o)
BIN := $(BUILD)/meshllm

TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BINS := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
TEST_UTIL_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tests/util/*.c))

FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_REPLAY_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/%_replay)

BENCH_SRCS := $(wildcard bench/*.c)
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(BUILD)/bench/%)

.PHONY: all lib test-bins check check-plain check-asan fuzz clean help cross-neon format
all: $(BIN) test-bins $(BENCH_BINS) $(BUILD)/tools/netproxy
lib: $(LIB)
test-bins: $(TEST_BINS) $(FUZZ_REPLAY_BINS)

# Per-file ISA flags: only these files may use instructions beyond the baseline.
ISA_AVX2 := -mavx2 -mfma -mf16c -mbmi2
ISA_AVX512 := $(ISA_AVX2) -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx512bf16
$(BUILD)/%_avx2.o: CFLAGS += $(ISA_AVX2)
$(BUILD)/%_avx512.o: CFLAGS += $(ISA_AVX512)
$(BUILD)/%_shani.o: CFLAGS += -msha -msse4.1 -mssse3

# Objects remember what built them: changing CC, OPT or SAN for the same BUILD folder
# rebuilds it rather than mixing objects (make BUILD=build-asan without SAN=1, then with it,
# used to link unsanitised objects into the ASan build). Warnings do not count (CI's -Werror).
FLAGS_STAMP := $(BUILD)/.build-flags
FLAGS_NOW := $(CC) $(OPT) SAN=$(SAN) $(CFLAGS_EXTRA)
ifneq ($(FLAGS_NOW),$(shell cat $(FLAGS_STAMP) 2>/dev/null))
$(shell mkdir -p $(BUILD) && echo '$(FLAGS_NOW)' > $(FLAGS_STAMP))
endif
$(FLAGS_STAMP): ;

$(BUILD)/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/gen/%.o: $(BUILD)/gen/%.c $(FLAGS_STAMP)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h: net/proto/%.proto
	@mkdir -p $(BUILD)/gen
	protoc-c --c_out=$(BUILD)/gen -Inet/proto $<

# Every object may include generated headers: make them first.
$(LIB_SRCS:%.c=$(BUILD)/%.o) $(CLI_OBJS) $(TEST_BINS:%=%.o) $(BENCH_BINS:%=%.o) $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/tests/fuzz/%.o): | $(PB_HDRS)

# Host tools run at build time (never cross-compiled).
$(BUILD)/tools/%: tools/%.c
	@mkdir -p $(dir $@)
	gcc -std=c11 -O2 -D_GNU_SOURCE -Wall -Wextra $< -o $@

$(BUILD)/gen/unicode_tables.c: $(BUILD)/tools/gen_unicode
	@mkdir -p $(dir $@)
	$(BUILD)/tools/gen_unicode $(UNICODE_DIR) > $@.tmp && mv $@.tmp $@

$(BUILD)/gen/web_assets.c: $(BUILD)/tools/embed $(wildcard web/*)
	@mkdir -p $(dir $@)
	$(BUILD)/tools/embed web > $@.tmp && mv $@.tmp $@

$(LIB): $(LIB_OBJS)
	@rm -f $@
	$(CROSS)ar rcs $@ $^

$(BIN): $(CLI_OBJS) $(LIB)
	$(CC) $(LDFLAGS) $(CLI_OBJS) $(LIB) $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_UTIL_OBJS) $(LIB)
	$(CC) $(LDFLAGS) $< $(TEST_UTIL_OBJS) $(LIB) $(LDLIBS) -lcmocka -o $@

# Fuzz targets are also linked with a replay driver so the suite runs their corpus.
$(BUILD)/fuzz/%_replay: $(BUILD)/tests/fuzz/%.o $(BUILD)/tests/fuzz/replay_main.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(LIB)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

# libFuzzer builds (clang): make fuzz; then build-fuzz/fuzz/fuzz_gguf corpus/
fuzz:
	$(MAKE) BUILD=build-fuzz CLANG=1 OPT="-O1" \
	  CFLAGS_EXTRA="-fsanitize=fuzzer-no-link,address,undefined" build-fuzz-targets
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/%)
build-fuzz-targets: CFLAGS += $(CFLAGS_EXTRA)
build-fuzz-targets: $(FUZZ_BINS)
$(BUILD)/fuzz/%: $(BUILD)/tests/fuzz/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) -fsanitize=fuzzer,address,undefined $^ $(LDLIBS) -o $@

check-plain: all
	tests/run.sh $(BUILD)

check-asan:
	$(MAKE) BUILD=build-asan SAN=1 OPT=-O1 all
	MESHLLM_SAN=1 tests/run.sh build-asan

# The whole suite: plain build, then the sanitizer build.
check:
	$(MAKE) check-plain
	$(MAKE) check-asan

cross-neon:
	$(MAKE) BUILD=build-aarch64 CROSS=aarch64-linux-gnu- lib

format:
	clang-format -i $(wildcard */*.c */*.h)

clean:
	rm -rf build build-asan build-fuzz build-aarch64

help:
	@sed -n '1,8p' Makefile

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
