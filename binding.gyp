# CPU build used by `npm install` (through node-gyp-build when no prebuilt binary matches).
# Sources and per-ISA flags come from native/sources.json, shared with CMakeLists.txt.
{
  "target_defaults": {
    "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-fPIC"],
    "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
    "cflags!": ["-fno-exceptions"],
    "xcode_settings": {
      "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
      "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
      "MACOSX_DEPLOYMENT_TARGET": "11.0"
    },
    "msvs_settings": {"VCCLCompilerTool": {"ExceptionHandling": 1}}
  },
  "targets": [
    {
      "target_name": "ebrix",
      "sources": [
        "<!@(node -p \"require('./native/sources.json').core.join(' ')\")",
        "<!@(node -p \"require('./native/sources.json').binding.join(' ')\")"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!(node scripts/usearch-include.cjs)"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "conditions": [
        ["target_arch=='x64'", {"dependencies": ["ebrix_avx2", "ebrix_avx512", "ebrix_avxvnni", "ebrix_avx512vnni"]}],
        ["target_arch=='arm64'", {"dependencies": ["ebrix_neon"]}]
      ]
    }
  ],
  "conditions": [
    ["target_arch=='x64'", {
      "targets": [
        {
          "target_name": "ebrix_avx2",
          "type": "static_library",
          "sources": ["<!@(node -p \"require('./native/sources.json').simd.avx2.join(' ')\")"],
          "cflags_cc": ["<!@(node -p \"require('./native/sources.json').simdFlags.avx2.join(' ')\")"],
          "xcode_settings": {"OTHER_CPLUSPLUSFLAGS": ["<!@(node -p \"require('./native/sources.json').simdFlags.avx2.join(' ')\")"]}
        },
        {
          "target_name": "ebrix_avx512",
          "type": "static_library",
          "sources": ["<!@(node -p \"require('./native/sources.json').simd.avx512.join(' ')\")"],
          "cflags_cc": ["<!@(node -p \"require('./native/sources.json').simdFlags.avx512.join(' ')\")"],
          "xcode_settings": {"OTHER_CPLUSPLUSFLAGS": ["<!@(node -p \"require('./native/sources.json').simdFlags.avx512.join(' ')\")"]}
        },
        {
          "target_name": "ebrix_avxvnni",
          "type": "static_library",
          "sources": ["<!@(node -p \"require('./native/sources.json').simd.avxvnni.join(' ')\")"],
          "cflags_cc": ["<!@(node -p \"require('./native/sources.json').simdFlags.avxvnni.join(' ')\")"],
          "xcode_settings": {"OTHER_CPLUSPLUSFLAGS": ["<!@(node -p \"require('./native/sources.json').simdFlags.avxvnni.join(' ')\")"]}
        },
        {
          "target_name": "ebrix_avx512vnni",
          "type": "static_library",
          "sources": ["<!@(node -p \"require('./native/sources.json').simd.avx512vnni.join(' ')\")"],
          "cflags_cc": ["<!@(node -p \"require('./native/sources.json').simdFlags.avx512vnni.join(' ')\")"],
          "xcode_settings": {"OTHER_CPLUSPLUSFLAGS": ["<!@(node -p \"require('./native/sources.json').simdFlags.avx512vnni.join(' ')\")"]}
        }
      ]
    }],
    ["target_arch=='arm64'", {
      "targets": [
        {
          "target_name": "ebrix_neon",
          "type": "static_library",
          "sources": ["<!@(node -p \"require('./native/sources.json').simd.neon.join(' ')\")"]
        }
      ]
    }]
  ]
}
