# TensorFlow Lite Micro from the pinned upstream sources, the project's ops for TFLM
# (lce_kernels/tflm) and the firmware runner (firmware/), for x86-64 and aarch64.
# Included by firmware_sim/Makefile (targets: firmware, firmware-host, firmware-aarch64,
# firmware-asan, tflm-sources).
#
# TFLM's debug_log.cc is not compiled: the firmware defines DebugLog (stderr + the JSON error).
# Sources: ../../shared/third_party/ (THIRD_PARTY_SRC; checked against its SHA256SUMS), else the
# same revisions downloaded from GitHub (a clear error when offline). Only what the build reads
# is unpacked, into build/third_party/: TFLM's tensorflow/ tree, flatbuffers' include/ (with
# TFLM's flatbuffers.patch applied, as TFLM's own download script does), gemmlowp's
# fixedpoint/ + internal/, ruy's profiler header. kissfft is pinned by TFLM for its signal
# library only, which no model here uses: not unpacked, not compiled.
#
# What is compiled: TFLM's runtime (interpreter, allocator, memory planners, flatbuffer
# conversions: the list TFLM's sources.inc selects, minus tests and test helpers) and ONLY the
# kernels the project's .tflite files use (float / int8 teacher, binary artifact, lce and
# bdfsmn exports minus SIGN; the float / lce streaming exports of feature hops): ADD SUB MUL
# ABS MEAN CONV_2D DEPTHWISE_CONV_2D FULLY_CONNECTED PAD PRELU RESHAPE, and for the streaming
# exports CONCATENATION STRIDED_SLICE AVERAGE_POOL_2D (pooling.cc also has MAX_POOL_2D).
# TFLM's build flags (-DTF_LITE_STATIC_MEMORY -DTF_LITE_DISABLE_X86_NEON
# -DKERNELS_OPTIMIZED_FOR_SPEED -fno-rtti -fno-exceptions -fno-threadsafe-statics
# -ffunction-sections -fdata-sections, release -DNDEBUG) plus -ffp-contract=off, so that the
# float reference kernels give the same bits on x86-64 and aarch64. Third-party code is
# compiled with -w; the project's code with warnings as errors.

THIRD_PARTY_SRC ?= $(abspath ../../shared/third_party)
TFLM_COMMIT         := 90b983c2b3f1480642e040bbd2ddb37b998f3424
FLATBUFFERS_VERSION := 25.9.23
GEMMLOWP_COMMIT     := 719139ce755a0f31cbf1c37f7f98adcc7fc9f425
RUY_COMMIT          := d37128311b445e758136b8602d1bbd2a755e115d
TP           := $(BUILD)/third_party
TFLM_DIR     := $(TP)/tflite-micro-$(TFLM_COMMIT)
FB_DIR       := $(TP)/flatbuffers-$(FLATBUFFERS_VERSION)
GEMMLOWP_DIR := $(TP)/gemmlowp-$(GEMMLOWP_COMMIT)
RUY_DIR      := $(TP)/ruy-$(RUY_COMMIT)
TFLM_STAMP   := $(TP)/.tflm-sources
HOST_CXX     ?= g++
CROSS_AR     ?= aarch64-linux-gnu-ar

# $(call fetch,TARBALL,URL,MEMBERS): the pinned tarball (checked against SHA256SUMS) or a
# download of the same revision, then extract MEMBERS into $(TP).
define fetch
	@src="$(THIRD_PARTY_SRC)/$(1)"; \
	if [ -f "$$src" ]; then \
	  ( cd "$(THIRD_PARTY_SRC)" && grep " $(1)$$" SHA256SUMS | sha256sum -c --quiet - ) || \
	    { echo "$$src does not match $(THIRD_PARTY_SRC)/SHA256SUMS"; exit 1; }; \
	else \
	  src="$(TP)/download/$(1)"; \
	  if [ ! -f "$$src" ]; then \
	    echo "$(THIRD_PARTY_SRC)/$(1) not found: downloading $(2)"; \
	    mkdir -p $(TP)/download; \
	    curl -fsSL --retry 2 -o "$$src.part" "$(2)" && mv "$$src.part" "$$src" || \
	      { rm -f "$$src.part"; echo "cannot download $(2) (offline?): put $(1) into $(THIRD_PARTY_SRC) (see its README.md)"; exit 1; }; \
	  fi; \
	fi; \
	tar xzf "$$src" -C $(TP) $(3)
endef

tflm-sources: $(TFLM_STAMP)

$(TFLM_STAMP):
	@mkdir -p $(TP)
	$(call fetch,tflite-micro-$(TFLM_COMMIT).tar.gz,https://github.com/tensorflow/tflite-micro/archive/$(TFLM_COMMIT).tar.gz,tflite-micro-$(TFLM_COMMIT)/tensorflow tflite-micro-$(TFLM_COMMIT)/signal)
	$(call fetch,flatbuffers-$(FLATBUFFERS_VERSION).tar.gz,https://github.com/google/flatbuffers/archive/refs/tags/v$(FLATBUFFERS_VERSION).tar.gz,flatbuffers-$(FLATBUFFERS_VERSION)/include)
	$(call fetch,gemmlowp-$(GEMMLOWP_COMMIT).tar.gz,https://github.com/google/gemmlowp/archive/$(GEMMLOWP_COMMIT).tar.gz,gemmlowp-$(GEMMLOWP_COMMIT)/fixedpoint gemmlowp-$(GEMMLOWP_COMMIT)/internal)
	$(call fetch,ruy-$(RUY_COMMIT).tar.gz,https://github.com/google/ruy/archive/$(RUY_COMMIT).tar.gz,ruy-$(RUY_COMMIT)/ruy/profiler)
	@patch -d $(FB_DIR) -p1 -s < $(TFLM_DIR)/tensorflow/lite/micro/tools/make/flatbuffers.patch
	@touch $@

TFLM_RUNTIME := $(addprefix tensorflow/lite/micro/, \
  flatbuffer_utils.cc hexdump.cc memory_helpers.cc micro_allocation_info.cc \
  micro_allocator.cc micro_context.cc micro_interpreter.cc micro_interpreter_context.cc \
  micro_interpreter_graph.cc micro_log.cc micro_op_resolver.cc micro_profiler.cc \
  micro_resource_variable.cc micro_time.cc micro_utils.cc recording_micro_allocator.cc \
  system_setup.cc \
  arena_allocator/non_persistent_arena_buffer_allocator.cc \
  arena_allocator/persistent_arena_buffer_allocator.cc \
  arena_allocator/recording_single_arena_buffer_allocator.cc \
  arena_allocator/single_arena_buffer_allocator.cc \
  memory_planner/greedy_memory_planner.cc memory_planner/linear_memory_planner.cc \
  memory_planner/non_persistent_buffer_planner_shim.cc \
  tflite_bridge/flatbuffer_conversions_bridge.cc tflite_bridge/micro_error_reporter.cc) \
  tensorflow/lite/core/c/common.cc tensorflow/lite/core/api/flatbuffer_conversions.cc \
  tensorflow/lite/core/api/tensor_utils.cc tensorflow/lite/kernels/kernel_util.cc \
  $(addprefix tensorflow/lite/kernels/internal/, common.cc portable_tensor_utils.cc \
    quantization_util.cc runtime_shape.cc tensor_ctypes.cc tensor_utils.cc \
    reference/portable_tensor_utils.cc) \
  tensorflow/compiler/mlir/lite/schema/schema_utils.cc \
  tensorflow/compiler/mlir/lite/core/api/error_reporter.cc
# The kernels of the project's models (and their shared helpers).
TFLM_KERNELS := $(addprefix tensorflow/lite/micro/kernels/, kernel_util.cc \
  micro_tensor_utils.cc add.cc add_common.cc sub.cc sub_common.cc mul.cc mul_common.cc \
  elementwise.cc reduce.cc reduce_common.cc pad_common.cc conv.cc conv_common.cc depthwise_conv.cc \
  depthwise_conv_common.cc fully_connected.cc fully_connected_common.cc pad.cc prelu.cc \
  prelu_common.cc reshape.cc reshape_common.cc concatenation.cc strided_slice.cc \
  strided_slice_common.cc pooling.cc pooling_common.cc)
TFLM_SRCS := $(TFLM_RUNTIME) $(TFLM_KERNELS)

# The sources exist once the stamp is made.
$(addprefix $(TFLM_DIR)/,$(TFLM_SRCS)): | $(TFLM_STAMP)
	@test -f $@ || { echo "$@ missing from the TFLM tarball"; exit 1; }

TFLM_DEFS := -DTF_LITE_STATIC_MEMORY -DTF_LITE_DISABLE_X86_NEON -DKERNELS_OPTIMIZED_FOR_SPEED \
             -DNDEBUG
TFLM_CODEGEN := -std=c++17 -O2 -fno-rtti -fno-exceptions -fno-threadsafe-statics \
                -ffunction-sections -fdata-sections -ffp-contract=off
TFLM_FLAGS := $(TFLM_CODEGEN) $(TFLM_DEFS) -w -I$(TFLM_DIR) -I$(FB_DIR)/include \
              -I$(GEMMLOWP_DIR) -I$(RUY_DIR)
TFLM_SYS_INC := -isystem $(TFLM_DIR) -isystem $(FB_DIR)/include -isystem $(GEMMLOWP_DIR) \
                -isystem $(RUY_DIR)

# The project's code: lce_kernels' warning set (errors) and its kernel flags.
FW_WARN := -Wall -Wextra -Werror -Wshadow -Wpedantic -Wnon-virtual-dtor -Wold-style-cast \
           -Wcast-align -Wunused -Woverloaded-virtual -Wnull-dereference -Wdouble-promotion \
           -Wformat=2
CORE_FLAGS := -O2 -std=c++17 $(FW_WARN) -ffp-contract=off -fno-strict-aliasing
GLUE_FLAGS := $(CORE_FLAGS) -fno-rtti -fno-exceptions -fno-threadsafe-statics \
              -ffunction-sections -fdata-sections $(TFLM_DEFS) $(TFLM_SYS_INC)
HOST_KFLAGS := $(if $(filter x86_64,$(shell uname -m)),-mpopcnt,)
ARM_KFLAGS  := -march=armv8-a

CORE_SRCS := $(addprefix ../lce_kernels/core/, bdfsmn.cc bitpack.cc bconv2d.cc dual_quantize.cc \
             op_validate.cc)
CORE_HDRS := $(addprefix ../lce_kernels/core/, bdfsmn.h bitpack.h bconv2d.h dual_quantize.h \
             kernel_path.h simd.h op_contract.h op_validate.h op_options.h)
GLUE_SRCS := $(addprefix ../lce_kernels/tflm/, bdfsmn_tflm.cc lce_ops_tflm.cc)
GLUE_HDRS := $(wildcard ../lce_kernels/tflm/*.h) ../lce_kernels/tflite/bdfsmn_options.h \
             ../lce_kernels/tflite/bconv2d_options.h ../lce_kernels/tflite/lce_ops_options.h \
             ../lce_kernels/tflite/validate_glue.h
FW_SRCS   := firmware/firmware.cc firmware/heap.cc firmware/xnn_kernels.cc
FW_HDRS   := $(wildcard firmware/*.h) drivers/insn_region.h

# $(call tflm_target,NAME,CXX,AR,KERNEL_FLAGS): build/tflm/NAME/libtflm.a and the objects of
# the project's code in build/NAME/obj/.
define tflm_target
TFLM_OBJS_$(1) := $$(patsubst %.cc,$(BUILD)/tflm/$(1)/%.o,$(TFLM_SRCS))
$(BUILD)/tflm/$(1)/%.o: $(TFLM_DIR)/%.cc
	@mkdir -p $$(@D)
	$(2) $(TFLM_FLAGS) $(4) -c $$< -o $$@
$(BUILD)/tflm/$(1)/libtflm.a: $$(TFLM_OBJS_$(1))
	@rm -f $$@
	$(3) rcs $$@ $$^
$(BUILD)/$(1)/obj/core/%.o: ../lce_kernels/core/%.cc $(CORE_HDRS)
	@mkdir -p $$(@D)
	$(2) $(CORE_FLAGS) $(4) -c $$< -o $$@
$(BUILD)/$(1)/obj/tflm/%.o: ../lce_kernels/tflm/%.cc $(GLUE_HDRS) $(CORE_HDRS) | $(TFLM_STAMP)
	@mkdir -p $$(@D)
	$(2) $(GLUE_FLAGS) $(4) -c $$< -o $$@
endef

$(eval $(call tflm_target,x86_64,$(HOST_CXX),ar,$(HOST_KFLAGS)))
$(eval $(call tflm_target,aarch64,$(CROSS_CXX),$(CROSS_AR),$(ARM_KFLAGS)))

objs = $(patsubst ../lce_kernels/core/%.cc,$(BUILD)/$(1)/obj/core/%.o,$(CORE_SRCS)) \
       $(patsubst ../lce_kernels/tflm/%.cc,$(BUILD)/$(1)/obj/tflm/%.o,$(GLUE_SRCS))

# XNNPACK (arm64, Debian's libxnnpack-dev): float kernels of the aarch64 firmware when present.
HAVE_XNN := $(shell [ -f $(XNN_HEADER) ] && [ -e $(XNN_LIBDIR)/libXNNPACK.so ] && echo 1)
ifeq ($(HAVE_XNN),1)
ARM_FW_XNN := -DFIRMWARE_HAVE_XNNPACK=1 -I$(ARCH_DIR)/xnn_include -Idrivers/xnn_compat
ARM_FW_LINK := -L$(ARCH_DIR)/xnn_lib -lXNNPACK -Wl,-rpath-link,$(XNN_LIBDIR) \
               -Wl,-rpath,$(XNN_LIBDIR) -Wl,-z,now
else
ARM_FW_XNN :=
ARM_FW_LINK := -static
endif

FW_LDFLAGS := -Wl,--gc-sections

firmware: firmware-host firmware-aarch64
firmware-host: $(BUILD)/x86_64/firmware
firmware-aarch64: $(ARCH_DIR)/firmware

$(BUILD)/x86_64/firmware: $(FW_SRCS) $(FW_HDRS) $(call objs,x86_64) $(BUILD)/tflm/x86_64/libtflm.a $(GLUE_HDRS)
	$(HOST_CXX) $(GLUE_FLAGS) $(HOST_KFLAGS) -I. -I.. $(FW_SRCS) $(call objs,x86_64) \
	  $(BUILD)/tflm/x86_64/libtflm.a $(FW_LDFLAGS) -o $@

$(ARCH_DIR)/firmware: $(FW_SRCS) $(FW_HDRS) $(call objs,aarch64) $(BUILD)/tflm/aarch64/libtflm.a $(GLUE_HDRS)
ifeq ($(HAVE_XNN),1)
	@mkdir -p $(ARCH_DIR)/xnn_include $(ARCH_DIR)/xnn_lib
	@ln -sf $(XNN_HEADER) $(ARCH_DIR)/xnn_include/xnnpack.h
	@ln -sf $(XNN_LIBDIR)/libXNNPACK.so $(ARCH_DIR)/xnn_lib/libXNNPACK.so
endif
	$(CROSS_CXX) $(GLUE_FLAGS) $(ARM_KFLAGS) $(ARM_FW_XNN) -I. -I.. $(FW_SRCS) $(call objs,aarch64) \
	  $(BUILD)/tflm/aarch64/libtflm.a $(FW_LDFLAGS) $(ARM_FW_LINK) -o $@

# ASan/UBSan: the project's code (firmware, glue, core) instrumented, TFLM's library as built.
ASAN := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
firmware-asan: $(BUILD)/asan/firmware

$(BUILD)/asan/firmware: $(FW_SRCS) $(FW_HDRS) $(CORE_SRCS) $(CORE_HDRS) $(GLUE_SRCS) $(GLUE_HDRS) $(BUILD)/tflm/x86_64/libtflm.a
	@mkdir -p $(@D)
	$(HOST_CXX) $(filter-out -O2,$(GLUE_FLAGS)) $(HOST_KFLAGS) $(ASAN) -DFIRMWARE_NO_COUNTED_NEW -I. -I.. $(FW_SRCS) \
	  $(GLUE_SRCS) $(CORE_SRCS) $(BUILD)/tflm/x86_64/libtflm.a -o $@
