extern "C" int attnscope_spm_placeholder() { return 0; }
