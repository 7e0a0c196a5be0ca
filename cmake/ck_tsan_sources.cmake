# ck_tsan_sources.cmake — Concurrency Kit's compiled parts, rebuilt for TSan.
#
# Owns: FTMEM_CK_LIBS (what the library links for ck), the cache variable
# FTMEM_CK_SOURCE_DIR and, in TSan builds, the target ftmem_ck_tsan.
# Included by the top-level CMakeLists.txt after ck_tsan_overlay.cmake.
#
# Why: ck_epoch and ck_hs live in libck.so, which Debian builds without
# instrumentation and with ck_pr's volatile/inline-asm atomics, so
# ThreadSanitizer sees neither their synchronisation nor their accesses and
# reports races in correct code (shared TSAN.md).  TSan builds therefore
# compile ck_epoch.c and ck_hs.c themselves, from Debian's source of the
# installed release (.ci/fetch_ck_source.sh), with -fsanitize=thread, the
# ck_pr overlay first on the include path and CK_USE_CC_BUILTINS=1, into the
# static PIC library ftmem_ck_tsan, linked before libck.so; and, because link
# order alone does not guarantee it (see "Renaming" below), with every
# function renamed so that calls cannot reach libck.so's copies.  Other
# builds link the stock libck.so.
#
# The copies are generated at configure time with exact-text edits that fail
# loudly when the source no longer has the text (as the overlay does).
# ck_epoch.c gets the edits; ck_hs.c needs none (all its shared accesses are
# already ck_pr loads and stores, which the overlay makes atomic).
#
# The installed headers (the ones the overlay copies and every user of ck
# compiles against) are used, not the source's include/: the objects must
# agree with the users about struct layouts.  Configure checks that the
# source's copies of the headers involved are identical to the installed
# ones, so a source tree from another ck release is refused.

set(FTMEM_CK_LIBS PkgConfig::CK)

if(FTMEM_SANITIZE STREQUAL "thread")
  if(NOT FTMEM_CK_OVERLAY_DIR)
    message(FATAL_ERROR "ck_tsan_sources: needs the ck_pr overlay (include cmake/ck_tsan_overlay.cmake first)")
  endif()

  # Same default as .ci/fetch_ck_source.sh, whose FTMEM_CK_SOURCE_DIR
  # environment variable names the cache directory that holds ck-<version>.
  if(DEFINED ENV{FTMEM_CK_SOURCE_DIR} AND NOT "$ENV{FTMEM_CK_SOURCE_DIR}" STREQUAL "")
    set(_ck_cache "$ENV{FTMEM_CK_SOURCE_DIR}")
  else()
    set(_ck_cache /var/cache/ftmem/ck-src)
  endif()
  set(FTMEM_CK_SOURCE_DIR "${_ck_cache}/ck-${CK_VERSION}" CACHE PATH
    "TSan builds: Debian's Concurrency Kit source tree (holding src/ and include/), from .ci/fetch_ck_source.sh")
  set(_ck_tree "${FTMEM_CK_SOURCE_DIR}")
  foreach(_f src/ck_epoch.c src/ck_hs.c src/ck_internal.h include/ck_epoch.h)
    if(NOT EXISTS "${_ck_tree}/${_f}")
      message(FATAL_ERROR "ck_tsan_sources: ${_ck_tree}/${_f} not found.\n"
        "TSan builds compile ck_epoch.c and ck_hs.c from Debian's ck source.  Fix:\n"
        "  sudo bash ${CMAKE_CURRENT_SOURCE_DIR}/.ci/fetch_ck_source.sh\n"
        "(it prints the source directory), then configure again; or pass "
        "-DFTMEM_CK_SOURCE_DIR=<directory holding ck's src/ and include/>.")
    endif()
  endforeach()

  # The source must be the installed release: its headers for the two
  # modules (and what they include from ck) equal to the installed ones.
  foreach(_h ck_epoch.h ck_hs.h ck_stack.h ck_malloc.h ck_pr.h ck_cc.h ck_limits.h
             ck_stdint.h ck_stdbool.h ck_string.h ck_backoff.h gcc/ck_pr.h gcc/ck_cc.h)
    file(SHA256 "${_ck_tree}/include/${_h}" _a)
    file(SHA256 "${FTMEM_CK_INCLUDE_DIR}/${_h}" _b)
    if(NOT _a STREQUAL _b)
      message(FATAL_ERROR "ck_tsan_sources: ${_ck_tree}/include/${_h} differs from the installed "
        "${FTMEM_CK_INCLUDE_DIR}/${_h}: the source tree is not the installed ck ${CK_VERSION}.  "
        "Fetch the matching one (.ci/fetch_ck_source.sh) or set FTMEM_CK_SOURCE_DIR.")
    endif()
  endforeach()

  set(_ck_dst "${CMAKE_BINARY_DIR}/ck-tsan-src")

  # Exact-text edits of a copy held in _ck_text: FROM must occur exactly once
  # (a text that moved or doubled is as much a sign that ck changed as one
  # that vanished).  A function per edit, not a list of pairs: the texts
  # hold semicolons.
  function(_ftmem_ck_src_edit from to)
    string(FIND "${_ck_text}" "${from}" _first)
    string(FIND "${_ck_text}" "${from}" _last REVERSE)
    if(_first EQUAL -1)
      message(FATAL_ERROR "ck_tsan_sources: '${from}' not found in "
        "${_ck_tree}/src/${_ck_name}; ck changed, update the edits")
    elseif(NOT _first EQUAL _last)
      message(FATAL_ERROR "ck_tsan_sources: '${from}' occurs more than once in "
        "${_ck_tree}/src/${_ck_name}; ck changed, update the edits")
    endif()
    string(REPLACE "${from}" "${to}" _out "${_ck_text}")
    set(_ck_text "${_out}" PARENT_SCOPE)
  endfunction()
  # Writes _ck_text as _ck_dst/<name> (rewritten only when the content
  # changed, so reconfiguring does not rebuild).
  function(_ftmem_ck_src_write)
    set(_tmp "${CMAKE_BINARY_DIR}/CMakeFiles/ck-tsan-src-${_ck_name}")
    file(WRITE "${_tmp}" "${_ck_text}")
    configure_file("${_tmp}" "${_ck_dst}/${_ck_name}" COPYONLY)
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${_ck_tree}/src/${_ck_name}")
  endfunction()

  # ck_epoch.c: the plain accesses to fields that other threads access
  # concurrently.  A reclaiming thread's scan (ck_epoch_scan, under
  # ck_epoch_poll/synchronize/barrier) walks every record reading state,
  # active and epoch with ck_pr_load: a plain store to one of them races with
  # that load.  A plain read of the records list head races with a
  # concurrent ck_epoch_register's push and, being no acquire, would not
  # order the new record's initialisation before the scan reads it.
  set(_ck_name ck_epoch.c)
  file(READ "${_ck_tree}/src/${_ck_name}" _ck_text)
  # 1. ck_epoch_register: the record's state/active/epoch, which scans read.
  #    Given 3 (the scan reaches a record only through an acquire of the
  #    head its push released) these are ordered before any scan already;
  #    made atomic anyway (same code on x86-64), as every other access to
  #    those fields is.
  _ftmem_ck_src_edit(
    "record->global = global;
	record->state = CK_EPOCH_STATE_USED;
	record->active = 0;
	record->epoch = 0;"
    "record->global = global;
	ck_pr_store_uint(&record->state, CK_EPOCH_STATE_USED);
	ck_pr_store_uint(&record->active, 0);
	ck_pr_store_uint(&record->epoch, 0);")
  # 2. ck_epoch_unregister: active/epoch reset while other threads scan.
  _ftmem_ck_src_edit(
    "size_t i;

	record->active = 0;
	record->epoch = 0;"
    "size_t i;

	ck_pr_store_uint(&record->active, 0);
	ck_pr_store_uint(&record->epoch, 0);")
  # 3. ck_epoch_scan: the records list head, pushed to by ck_epoch_register.
  _ftmem_ck_src_edit(
    "cursor = CK_STACK_FIRST(&global->records);"
    "cursor = ck_pr_load_ptr(&global->records.head);")
  # 4. ck_epoch_poll_deferred: the poller's own epoch, read by others' scans
  #    (a scan that saw the poller active in an earlier section loads its
  #    epoch next; nothing orders that load after this store).
  _ftmem_ck_src_edit(
    "if (active == false) {
		record->epoch = epoch;"
    "if (active == false) {
		ck_pr_store_uint(&record->epoch, epoch);")
  # 5. ck_epoch_recycle: the same list head as 3 (CK_STACK_FOREACH reads it
  #    plainly) when one thread recycles a record while another registers.
  _ftmem_ck_src_edit(
    "CK_STACK_FOREACH(&global->records, cursor) {"
    "for (cursor = ck_pr_load_ptr(&global->records.head); cursor != NULL;
	    cursor = CK_STACK_NEXT(cursor)) {")
  string(PREPEND _ck_text
    "/* Generated by ftmem's cmake/ck_tsan_sources.cmake from\n"
    " * ${_ck_tree}/src/ck_epoch.c: plain accesses to shared fields made\n"
    " * ck_pr loads and stores so that ThreadSanitizer sees them.  Do not edit. */\n")
  _ftmem_ck_src_write()
  # ck_hs.c and its internal header: unchanged copies.
  foreach(_ck_name ck_hs.c ck_internal.h)
    file(READ "${_ck_tree}/src/${_ck_name}" _ck_text)
    _ftmem_ck_src_write()
  endforeach()

  # Renaming.  Link order alone cannot make these objects win: GNU ld takes
  # an archive member only for a symbol still undefined, so wherever
  # libck.so comes first on a link line, ck_epoch_* bind to it and the
  # archive is skipped, silently.  CMake does produce such lines, e.g. for a
  # program linking ftmem_stress_util and then PkgConfig::CK it emits
  # "libftmem.a libck.so libftmem_ck_tsan.a".  So every function these files
  # define is renamed ftmem_tsan_<name> by a header force-included (-include)
  # into them and, as a usage requirement, into whatever links
  # ftmem_ck_tsan (the library, through FTMEM_CK_LIBS): those calls can only
  # resolve to the instrumented copies (or fail to link), never to libck.so.
  # The names are the non-static function definitions (ck's style puts the
  # type on the line before the name); a post-build check fails if any
  # global ck symbol in the archive escaped the renaming.
  set(_ck_names "")
  foreach(_f ck_epoch.c ck_hs.c)
    file(READ "${_ck_dst}/${_f}" _t)
    string(REGEX MATCHALL "\n[^\n]*\n_?ck_[a-z0-9_]+\\(" _defs "${_t}")
    foreach(_d IN LISTS _defs)
      if(NOT _d MATCHES "\n[^\n]*static[^\n]*\n")
        string(REGEX MATCH "_?ck_[a-z0-9_]+\\($" _n "${_d}")
        string(REGEX REPLACE "\\($" "" _n "${_n}")
        list(APPEND _ck_names "${_n}")
      endif()
    endforeach()
  endforeach()
  foreach(_n _ck_epoch_addref ck_epoch_register ck_epoch_poll ck_hs_get ck_hs_put ck_hs_init)
    if(NOT _n IN_LIST _ck_names)
      message(FATAL_ERROR "ck_tsan_sources: no definition of ${_n} found in the copies of "
        "ck_epoch.c/ck_hs.c; ck changed, update the renaming")
    endif()
  endforeach()
  string(CONCAT _ck_h "/* Generated by ftmem's cmake/ck_tsan_sources.cmake: the functions of the\n"
    " * TSan-instrumented ck_epoch.c and ck_hs.c (target ftmem_ck_tsan), renamed\n"
    " * so that no call can bind to the stock libck.so.  Force-included. */\n"
    "#ifndef FTMEM_CK_TSAN_NAMES\n#define FTMEM_CK_TSAN_NAMES 1\n")
  foreach(_n IN LISTS _ck_names)
    string(APPEND _ck_h "#define ${_n} ftmem_tsan_${_n}\n")
  endforeach()
  string(APPEND _ck_h "#endif\n")
  file(WRITE "${CMAKE_BINARY_DIR}/CMakeFiles/ck-tsan-names.h" "${_ck_h}")
  configure_file("${CMAKE_BINARY_DIR}/CMakeFiles/ck-tsan-names.h" "${_ck_dst}/ck_tsan_names.h" COPYONLY)

  add_library(ftmem_ck_tsan STATIC "${_ck_dst}/ck_epoch.c" "${_ck_dst}/ck_hs.c")
  target_compile_options(ftmem_ck_tsan PUBLIC "SHELL:-include ${_ck_dst}/ck_tsan_names.h")
  # The overlay must win over the installed ck_pr.h (see the overlay file);
  # the copy's own directory holds ck_internal.h.
  target_include_directories(ftmem_ck_tsan BEFORE PRIVATE "${FTMEM_CK_OVERLAY_DIR}" "${_ck_dst}")
  target_compile_definitions(ftmem_ck_tsan PRIVATE CK_USE_CC_BUILTINS=1)
  # ck's own build: gnu99, -O2 (regardless of our build type: this is a
  # dependency), frame pointers kept for TSan's stacks.
  target_compile_options(ftmem_ck_tsan PRIVATE ${FTMEM_SAN_FLAGS} -g -O2 -fno-omit-frame-pointer)
  # Only PkgConfig::CK's compile flags (its -D__x86_64__): the library file
  # itself is linked by FTMEM_CK_LIBS, after this archive.
  target_compile_options(ftmem_ck_tsan PRIVATE $<TARGET_PROPERTY:PkgConfig::CK,INTERFACE_COMPILE_OPTIONS>)
  set_target_properties(ftmem_ck_tsan PROPERTIES
    POSITION_INDEPENDENT_CODE ON # linked into libftmem.so too
    C_VISIBILITY_PRESET hidden   # ... which must not export them
    C_STANDARD 99 C_EXTENSIONS ON)
  add_custom_command(TARGET ftmem_ck_tsan POST_BUILD
    COMMAND sh -c "if '${CMAKE_NM}' -g --defined-only \"$0\" | grep -E ' _?ck_'; then echo \"$0: the ck symbols above escaped the renaming (cmake/ck_tsan_sources.cmake)\" >&2; rm -f \"$0\"; exit 1; fi"
      $<TARGET_FILE:ftmem_ck_tsan>
    VERBATIM)

  # $<BUILD_INTERFACE:...>: TSan builds are never installed, and the export
  # set (install(EXPORT ftmemTargets)) must not name ftmem_ck_tsan, which
  # ftmem-static would otherwise carry as a link-only dependency.
  set(FTMEM_CK_LIBS $<BUILD_INTERFACE:ftmem_ck_tsan> PkgConfig::CK)
  list(LENGTH _ck_names _nn)
  message(STATUS "ftmem: ck_epoch/ck_hs for TSan compiled from ${_ck_tree} (${_nn} functions renamed ftmem_tsan_*)")
endif()
