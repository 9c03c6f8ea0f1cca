// SPDX-License-Identifier: Apache-2.0
// HealthCode Ledger (mocks/MockERC1271Wallet.sol)
pragma solidity ^0.8.24;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";

/**
 * @dev TEST ONLY - never deploy outside a test chain. A minimal contract wallet (ERC-1271) controlled by
 * one key, `owner`: a signature is valid for the wallet when it is `owner`'s ECDSA signature of the hash.
 * Tests use it as a patient or a guardian to show that {ConsentRegistry} accepts signed consents from
 * contract wallets (smart accounts, multisigs) and not only from externally owned accounts.
 */
contract MockERC1271Wallet is IERC1271 {
    /// @dev The key whose signatures this wallet accepts.
    address public immutable owner;

    /// @param owner_ The key that controls the wallet.
    constructor(address owner_) {
        owner = owner_;
    }

    /**
     * @dev Returns the ERC-1271 magic value if `signature` is `owner`'s ECDSA signature of `hash`, and
     * `0xffffffff` otherwise. A malformed signature reverts (in `ECDSA.recover`); callers such as
     * OpenZeppelin's `SignatureChecker` treat that as invalid.
     */
    function isValidSignature(bytes32 hash, bytes memory signature) external view returns (bytes4 magicValue) {
        return ECDSA.recover(hash, signature) == owner ? IERC1271.isValidSignature.selector : bytes4(0xffffffff);
    }
}
