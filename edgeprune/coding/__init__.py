"""Weight coding (Deep Compression): canonical Huffman codes, the EPHC container, a C decoder in c/."""
