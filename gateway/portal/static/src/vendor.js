// The portal's only third-party JavaScript, bundled by esbuild into gateway/portal/static/vendor/hcl-vendor.js
// at install (scripts/_bootstrap.sh, `npm run build:portal`): no CDN, works with no internet.
//   - ethers v6: keystore decryption, EIP-191 sign-in, EIP-712 consent signing, raw transactions,
//     an injected EIP-1193 wallet when the browser has one.
//   - @hpke/core: opens a release (RFC 9180, DHKEM(X25519)/HKDF-SHA256/AES-256-GCM) with the
//     institution's X25519 key, inside the page.
import {
  BrowserProvider, Transaction, Wallet, concat, getAddress, getBytes, hexlify, isAddress, keccak256,
  randomBytes, sha256, toUtf8Bytes,
} from "ethers";
import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from "@hpke/core";

window.hclVendor = {
  ethers: {
    BrowserProvider, Transaction, Wallet, concat, getAddress, getBytes, hexlify, isAddress, keccak256,
    randomBytes, sha256, toUtf8Bytes,
  },
  hpke: { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 },
};
