# copy_corpus.cmake — cmake -DSRC=<seed corpus> -DDST=<work corpus> -P copy_corpus.cmake
# A fresh copy of a seed corpus for a short fuzz run: libFuzzer adds the
# inputs it finds to the directory it is given, and the source tree's seed
# corpus must stay as committed.
if(NOT SRC OR NOT DST)
  message(FATAL_ERROR "copy_corpus.cmake: SRC and DST are required")
endif()
file(REMOVE_RECURSE "${DST}")
file(MAKE_DIRECTORY "${DST}")
file(GLOB seeds "${SRC}/*")
if(seeds)
  file(COPY ${seeds} DESTINATION "${DST}")
endif()
list(LENGTH seeds n)
message(STATUS "copied ${n} seed inputs from ${SRC} to ${DST}")
