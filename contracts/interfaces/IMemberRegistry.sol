// SPDX-License-Identifier: Apache-2.0
// HealthCode Ledger (interfaces/IMemberRegistry.sol)
pragma solidity ^0.8.24;

/**
 * @dev Consortium membership of HealthCode Ledger: which institutions belong to the network, in which
 * roles, and the M-of-N governance among admins that changes it.
 *
 * Roles are bits of a `uint16` mask (see {Vocabulary}): HOSPITAL, CLINIC, LAB, PHARMACY, GATEWAY,
 * AUDITOR, REGULATOR and the EMERGENCY capability. Names and other institution details live off-chain;
 * the chain keeps only a metadata hash and the member's X25519 encryption public key.
 *
 * Every member has a number (1, 2, ... in order of admission), and every number a custodian: the member
 * itself, until governance hands the records registered under that number to a successor gateway
 * (the TransferRecords action). {IRecordRegistry} stores the registering gateway's number with each record,
 * so that only the record's custodian may retract or amend it.
 */
interface IMemberRegistry {
    /// @dev Lifecycle of a member. `None` = never added; `Removed` members may be added again.
    enum MemberStatus {
        None,
        Active,
        Suspended,
        Removed
    }

    /// @dev What a governance proposal does once executed.
    enum Action {
        AddMember,
        SuspendMember,
        ReinstateMember,
        RemoveMember,
        ChangeRoles,
        RotateEncryptionKey,
        AddAdmin,
        RemoveAdmin,
        ChangeThreshold,
        TransferRecords
    }

    /// @dev Lifecycle of a governance proposal.
    enum ProposalStatus {
        None,
        Pending,
        Executed,
        Cancelled
    }

    /// @dev A member as returned by {memberOf}.
    struct Member {
        MemberStatus status;
        uint16 roles;
        uint40 since;
        bytes32 encryptionKey;
        bytes32 metadataHash;
    }

    /// @dev A governance proposal as returned by {proposalOf}. `arg` holds the roles mask for
    /// AddMember/ChangeRoles, the new threshold for ChangeThreshold and, for TransferRecords, the member
    /// number whose records go to `target`.
    struct Proposal {
        address target;
        uint16 arg;
        Action action;
        uint8 approvals;
        ProposalStatus status;
        uint40 expiresAt;
        uint16 adminEpoch;
        address proposer;
        bytes32 encryptionKey;
        bytes32 metadataHash;
    }

    // ---------------------------------------------------------------- errors

    /// @dev `account` is not a governance admin.
    error MemberRegistryNotAdmin(address account);
    /// @dev The threshold `threshold` is not within 1..`adminCount`.
    error MemberRegistryInvalidThreshold(uint256 threshold, uint256 adminCount);
    /// @dev `roles` is zero or has bits outside the defined roles.
    error MemberRegistryInvalidRoles(uint16 roles);
    /// @dev A zero address was given where an account is needed.
    error MemberRegistryZeroAddress();
    /// @dev A zero encryption key was given.
    error MemberRegistryInvalidEncryptionKey();
    /// @dev `member` is in status `status`, which does not allow the requested change.
    error MemberRegistryInvalidMemberStatus(address member, MemberStatus status);
    /// @dev `account` is already an admin (add) or is not one (remove).
    error MemberRegistryAdminState(address account, bool isAdmin);
    /// @dev Removing an admin would leave fewer admins than the threshold (or none).
    error MemberRegistryAdminUnderflow(uint256 adminCount, uint256 threshold);
    /// @dev The admin set is full (`max` admins).
    error MemberRegistryTooManyAdmins(uint256 max);
    /// @dev No pending proposal `proposalId`.
    error MemberRegistryUnknownProposal(uint256 proposalId);
    /// @dev Proposal `proposalId` is no longer pending (executed or cancelled).
    error MemberRegistryProposalNotPending(uint256 proposalId, ProposalStatus status);
    /// @dev Proposal `proposalId` expired at `expiresAt`.
    error MemberRegistryProposalExpired(uint256 proposalId, uint40 expiresAt);
    /// @dev Proposal `proposalId` was made under an earlier admin set or threshold and can no longer be executed.
    error MemberRegistryProposalStale(uint256 proposalId);
    /// @dev `admin` already approved proposal `proposalId`.
    error MemberRegistryAlreadyApproved(uint256 proposalId, address admin);
    /// @dev Proposal `proposalId` has `approvals` approvals and needs `threshold`.
    error MemberRegistryNotEnoughApprovals(uint256 proposalId, uint256 approvals, uint256 threshold);
    /// @dev Only the proposer may cancel a pending, unexpired proposal.
    error MemberRegistryNotProposer(uint256 proposalId, address account);
    /// @dev No member number `number` has been given out.
    error MemberRegistryUnknownNumber(uint16 number);
    /// @dev `account` is not an active GATEWAY member (the successor of a TransferRecords must be one).
    error MemberRegistryNotGateway(address account);
    /// @dev Every member number (1..`max`) has been given out.
    error MemberRegistryTooManyMembers(uint256 max);

    // ---------------------------------------------------------------- events

    /// @dev A governance proposal was created (and approved by its proposer).
    event ProposalCreated(
        uint256 indexed proposalId,
        address indexed proposer,
        Action indexed action,
        address target,
        uint16 arg,
        bytes32 encryptionKey,
        bytes32 metadataHash,
        uint40 expiresAt
    );
    /// @dev `admin` approved proposal `proposalId`, which now has `approvals` approvals.
    event ProposalApproved(uint256 indexed proposalId, address indexed admin, uint8 approvals);
    /// @dev Proposal `proposalId` was executed by `executor`.
    event ProposalExecuted(uint256 indexed proposalId, address indexed executor);
    /// @dev Proposal `proposalId` was cancelled by `account`.
    event ProposalCancelled(uint256 indexed proposalId, address indexed account);

    /// @dev `member` joined the consortium.
    event MemberAdded(address indexed member, uint16 roles, bytes32 encryptionKey, bytes32 metadataHash);
    /// @dev `member` was suspended: it keeps its data but may do nothing until reinstated.
    event MemberSuspended(address indexed member);
    /// @dev `member` was reinstated after a suspension.
    event MemberReinstated(address indexed member);
    /// @dev `member` left the consortium.
    event MemberRemoved(address indexed member);
    /// @dev The roles of `member` changed from `previousRoles` to `roles`.
    event MemberRolesChanged(address indexed member, uint16 previousRoles, uint16 roles);
    /// @dev The X25519 encryption key of `member` was rotated.
    event EncryptionKeyRotated(address indexed member, bytes32 encryptionKey);
    /// @dev `account` became a governance admin.
    event AdminAdded(address indexed account);
    /// @dev `account` is no longer a governance admin.
    event AdminRemoved(address indexed account);
    /// @dev The approval threshold changed.
    event ThresholdChanged(uint8 previousThreshold, uint8 threshold);
    /// @dev The records registered under member number `number` passed from the departed gateway `from`
    /// to the gateway `to`, which may now retract and amend them.
    event RecordsTransferred(uint16 indexed number, address indexed from, address indexed to);

    // ---------------------------------------------------------------- governance

    /**
     * @dev Proposes a membership or governance change; the proposer's approval is counted at once.
     *
     * Requirements:
     * - the caller is an admin;
     * - the arguments are valid for `action` (checked again at execution).
     *
     * Emits a {ProposalCreated} and a {ProposalApproved} event.
     */
    function propose(
        Action action,
        address target,
        uint16 arg,
        bytes32 encryptionKey,
        bytes32 metadataHash
    ) external returns (uint256 proposalId);

    /**
     * @dev Approves pending proposal `proposalId`.
     *
     * Requirements:
     * - the caller is an admin that has not approved it yet;
     * - the proposal is pending, unexpired and made under the current admin set.
     *
     * Emits a {ProposalApproved} event.
     */
    function approve(uint256 proposalId) external;

    /**
     * @dev Executes pending proposal `proposalId` once it has at least `threshold` approvals.
     *
     * Requirements:
     * - the caller is an admin;
     * - the proposal is pending, unexpired, made under the current admin set and approved enough;
     * - the change is valid now, e.g. for TransferRecords: the current custodian of number `arg` is
     *   Suspended or Removed (a gateway in service keeps its records) and `target` is an active GATEWAY
     *   member.
     *
     * A member added again after a removal, or reinstated after a suspension, keeps its number unless its
     * records were transferred meanwhile; then it gets a new number (what it registers from now on is its
     * own, what it registered before stays with the successor).
     *
     * Emits {ProposalExecuted} and the event of the change itself (e.g. {MemberAdded}, {RecordsTransferred}).
     */
    function execute(uint256 proposalId) external;

    /**
     * @dev Cancels pending proposal `proposalId`.
     *
     * Requirements:
     * - the caller is its proposer, or the proposal has expired (then any admin may clean it up).
     *
     * Emits a {ProposalCancelled} event.
     */
    function cancel(uint256 proposalId) external;

    // ---------------------------------------------------------------- views

    /// @dev Whether `member` is active and holds at least one of the role bits in `roles`.
    function isActive(address member, uint16 roles) external view returns (bool);

    /// @dev The roles of `member` if it is active, 0 otherwise: one call for every role test.
    function activeRoles(address member) external view returns (uint16);

    /// @dev The number of `account` if it is an active GATEWAY member, 0 otherwise: {IRecordRegistry}'s
    /// gateway check and the holder it stores, in one call.
    function gatewayNumber(address account) external view returns (uint16);

    /// @dev The number of `member` (0 if it was never added).
    function numberOf(address member) external view returns (uint16);

    /// @dev Who holds the records registered under member number `number`: the member itself unless they
    /// were transferred (zero if the number was never given out).
    function custodianOf(uint16 number) external view returns (address);

    /// @dev The full member record of `member` (status None if unknown).
    function memberOf(address member) external view returns (Member memory);

    /// @dev Whether `account` is a governance admin.
    function isAdmin(address account) external view returns (bool);

    /// @dev The number of admins and the approval threshold.
    function governance() external view returns (uint8 adminCount, uint8 threshold, uint16 adminEpoch);

    /// @dev Proposal `proposalId` (status None if unknown).
    function proposalOf(uint256 proposalId) external view returns (Proposal memory);

    /// @dev Whether `admin` approved proposal `proposalId`.
    function hasApproved(uint256 proposalId, address admin) external view returns (bool);

    /// @dev The number of proposals ever made; ids run from 1 to this number.
    function proposalCount() external view returns (uint256);
}
