// SPDX-License-Identifier: Apache-2.0
// HealthCode Ledger (interfaces/IAccessLedger.sol)
pragma solidity ^0.8.24;

/**
 * @dev The access ledger: a tamper-evident trace of every release of a patient's record.
 *
 * Two modes, used by the gateway:
 * - strict: one {logAccess} per release, or many releases' entries in one {logAccessBatch} (the gateway's
 *   group commit). The contract checks each release itself and ledgers it only if it is authorized at
 *   this block, so nothing unauthorized can ever be ledgered;
 * - batch: the gateway appends releases to its own journal and anchors the root of an RFC 6962 Merkle
 *   tree over it with {anchorBatch}; an auditor proves every journal entry against the anchored roots.
 */
interface IAccessLedger {
    /// @dev The latest anchor of a gateway's journal, as returned by {latestAnchor}.
    struct Anchor {
        uint64 treeSize;
        uint40 anchoredAt;
        uint64 count;
    }

    /// @dev One release to ledger with {logAccessBatch}: the arguments of {logAccess}.
    struct AccessEntry {
        address requester;
        address patient;
        bytes32 recordId;
        uint8 purpose;
        bytes32 accessHash;
    }

    /// @dev `account` is not an active GATEWAY member.
    error AccessLedgerNotGateway(address account);
    /// @dev `requester` is not an active care-providing member.
    error AccessLedgerInvalidRequester(address requester);
    /// @dev No record `recordId`.
    error AccessLedgerUnknownRecord(bytes32 recordId);
    /// @dev Record `recordId` does not belong to `patient`.
    error AccessLedgerRecordMismatch(bytes32 recordId, address patient);
    /// @dev Record `recordId` was retracted.
    error AccessLedgerRecordRetracted(bytes32 recordId);
    /// @dev No consent (nor emergency access) lets `requester` read `category` of `patient` for `purpose` now.
    error AccessLedgerNotAuthorized(address requester, address patient, uint8 category, uint8 purpose);
    /// @dev The anchored tree size must grow: `treeSize` is not above `previousTreeSize`.
    error AccessLedgerTreeSizeNotIncreasing(uint64 treeSize, uint64 previousTreeSize);
    /// @dev The anchored root is zero.
    error AccessLedgerInvalidRoot();
    /// @dev {logAccessBatch} was given no entries.
    error AccessLedgerEmptyBatch();

    /// @dev The gateway that sent the transaction released record `recordId` of `patient` to `requester`
    /// for `purpose` under consent (or emergency access) `consentId`. `accessHash` commits to the released
    /// bytes and the request details.
    event AccessLogged(
        address indexed requester,
        address indexed patient,
        bytes32 indexed recordId,
        bytes32 consentId,
        uint8 purpose,
        bool emergency,
        bytes32 accessHash
    );
    /// @dev Entry `index` of the {logAccessBatch} in this transaction was not ledgered: {logAccess} would
    /// have reverted with the custom error whose selector is `reason` (e.g. `AccessLedgerNotAuthorized`).
    /// It carries no health facts; the caller knows which release entry `index` was.
    event AccessRefused(uint256 index, bytes4 reason);
    /// @dev `gateway` anchored the root of its access journal's Merkle tree of `treeSize` entries.
    event AccessBatchAnchored(
        address indexed gateway,
        uint64 indexed index,
        bytes32 root,
        uint64 treeSize,
        uint40 anchoredAt
    );
    /// @dev `gateway` anchored the RFC 6962 Merkle root of the first `size` auditors' reviews of emergency
    /// accesses it keeps (off-chain, signed by each auditor). A distinct event from {AccessBatchAnchored}, so a
    /// reviews root can never be taken for a journal root.
    event EmergencyReviewsAnchored(address indexed gateway, bytes32 root, uint64 size, uint40 anchoredAt);

    /**
     * @dev Ledgers one release (strict mode). Reverts unless it is authorized at this block.
     *
     * Requirements:
     * - the caller is an active GATEWAY member; `requester` is an active care provider;
     * - `recordId` exists, belongs to `patient` and is not retracted;
     * - {IConsentRegistry-check} allows (`patient`, `requester`, record category, `purpose`).
     *
     * Emits an {AccessLogged} event.
     */
    function logAccess(
        address requester,
        address patient,
        bytes32 recordId,
        uint8 purpose,
        bytes32 accessHash
    ) external returns (bytes32 consentId, bool emergency);

    /**
     * @dev Ledgers many releases in one transaction (strict mode's group commit). Each entry is checked
     * exactly as {logAccess} checks it; an entry that {logAccess} would refuse is skipped, not reverted,
     * so one release whose consent was just revoked does not hold back the others.
     *
     * Requirements:
     * - the caller is an active GATEWAY member;
     * - `entries` is not empty.
     *
     * Emits, in entry order, an {AccessLogged} event (the same as {logAccess}'s) for each entry that is
     * authorized at this block, and an {AccessRefused} event for each other entry. Returns how many
     * entries were logged.
     */
    function logAccessBatch(AccessEntry[] calldata entries) external returns (uint256 logged);

    /**
     * @dev Anchors the RFC 6962 Merkle root `root` of the caller's journal of `treeSize` entries (batch mode).
     *
     * Requirements: the caller is an active GATEWAY member; `root` is not zero; `treeSize` is above the
     * caller's previous anchored tree size.
     *
     * Emits an {AccessBatchAnchored} event.
     */
    function anchorBatch(bytes32 root, uint64 treeSize) external;

    /**
     * @dev Anchors the Merkle root `root` of the first `size` emergency-access reviews the caller keeps.
     * Nothing is stored: an auditor reads the roots from the events and checks each extends the last.
     *
     * Requirements: the caller is an active GATEWAY member; `root` is not zero.
     *
     * Emits an {EmergencyReviewsAnchored} event.
     */
    function anchorReviews(bytes32 root, uint64 size) external;

    /// @dev The latest anchor of `gateway` (all zero if none); its root is in the matching {AccessBatchAnchored} event.
    function latestAnchor(address gateway) external view returns (Anchor memory);
}
