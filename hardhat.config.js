// Hardhat 2 configuration for HealthCode Ledger.
//
// The compiler version and settings live in solc-settings.json, which the Python compiler
// (node_client/_compile.py) reads too: both toolchains must feed solc the same settings, since the
// settings enter each contract's metadata and so its bytecode.
//
// Nothing is downloaded: the solc build is the npm `solc` package (solc-js) of this repository, and
// the local network is Hardhat's built-in EDR.
"use strict";

const path = require("path");
const { subtask } = require("hardhat/config");
const { TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD } = require("hardhat/builtin-tasks/task-names");

const SOLC_CONFIG = require("./solc-settings.json");

subtask(TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD, async (args) => {
  if (args.solcVersion !== SOLC_CONFIG.version) {
    throw new Error(
      `solc ${args.solcVersion} requested, but only the npm solc ${SOLC_CONFIG.version} is available offline`
    );
  }
  // Loaded lazily: loading soljson.js costs ~0.5 s, and most tasks (e.g. `node`) never compile.
  const solc = require("solc");
  const longVersion = solc.version();
  if (!longVersion.startsWith(`${SOLC_CONFIG.version}+`)) {
    throw new Error(`npm solc is ${longVersion}, but solc-settings.json pins ${SOLC_CONFIG.version}`);
  }
  return {
    compilerPath: require.resolve("solc/soljson.js"),
    isSolcJs: true,
    version: SOLC_CONFIG.version,
    longVersion,
  };
});

/** @type import('hardhat/config').HardhatUserConfig */
module.exports = {
  solidity: {
    version: SOLC_CONFIG.version,
    settings: SOLC_CONFIG.settings,
  },
  paths: {
    sources: "./contracts",
    artifacts: process.env.HCL_HARDHAT_ARTIFACTS || "./artifacts",
    cache: process.env.HCL_HARDHAT_CACHE || "./cache",
  },
  networks: {
    hardhat: {
      chainId: 31337,
      // The EVM of the consortium network: geth 1.13's Clique stops at London (no PUSH0, MCOPY,
      // transient storage), and Besu QBFT runs London bytecode too. Hardhat's default (the newest
      // fork) would accept bytecode the production chain refuses. solc-settings.json targets the same.
      hardfork: "london",
      allowUnlimitedContractSize: false,
      mining: {
        auto: true,
      },
    },
  },
};
