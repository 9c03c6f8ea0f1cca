"""The portal's two languages: Simplified Chinese (default) and English.

One catalog, key → (zh-CN, en). Templates call ``t("key")``; the page script gets the keys it needs
as JSON (``js_messages``). Category and purpose names come from :mod:`node_client.vocabulary`, which
already carries both languages. A test checks that every key a template or the script uses exists.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from fastapi import Request

from node_client.healthcode import TermView
from node_client.vocabulary import CATEGORIES, Term

__all__ = ["DEFAULT", "FHIR_TYPES", "LANGS", "MESSAGES", "category_term", "negotiate", "translator"]

LANGS = ("zh-CN", "en")
DEFAULT = "zh-CN"
COOKIE = "hcl_lang"

MESSAGES: dict[str, tuple[str, str]] = {
    # chrome
    "app_name": ("健康码链", "HealthCode Ledger"),
    "tagline": ("患者授权、可追溯的医疗数据共享", "Patient-controlled, traceable health-data sharing"),
    "nav_patient": ("患者", "Patient"),
    "nav_hospital": ("医疗机构", "Hospital"),
    "nav_auditor": ("审计", "Auditor"),
    "language": ("语言", "Language"),
    "skip_to_content": ("跳到正文", "Skip to content"),
    "sign_out": ("退出", "Sign out"),
    "signed_in_as": ("已登录：", "Signed in as "),
    "dev_note": (
        "开发网络：演示密钥均为公开测试密钥，切勿用于真实数据。",
        "Dev network: the demo keys are public test keys — never use them for real data.",
    ),
    # unlock / sign in
    "unlock_title": ("解锁密钥", "Unlock your key"),
    "unlock_help": (
        "选择加密的密钥文件（keystore）并输入密码。私钥只在本页面内解密和使用，不会发送到任何服务器。",
        "Choose your encrypted keystore file and enter its password. The key is decrypted and used "
        "only inside this page; it is never sent anywhere.",
    ),
    "keystore_file": ("密钥文件（keystore JSON）", "Keystore file (JSON)"),
    "password": ("密码", "Password"),
    "encryption_key_file": (
        "解密密钥文件（X25519 JWK，查看病历时需要）",
        "Release decryption key (X25519 JWK, needed to open records)",
    ),
    "unlock": ("解锁并登录", "Unlock and sign in"),
    "use_wallet": ("使用浏览器钱包", "Use browser wallet"),
    "unlocking": ("正在解密密钥…", "Decrypting the key…"),
    "signing_in": ("正在登录…", "Signing in…"),
    "unlocked": ("已解锁", "Unlocked"),
    "locked": ("未解锁：签名操作前需要解锁密钥", "Locked: unlock your key before signing"),
    "wrong_password": ("密码错误或密钥文件无效", "Wrong password or not a keystore file"),
    "choose_keystore": ("请选择密钥文件", "Choose a keystore file"),
    "unlock_first": ("请先解锁密钥", "Unlock your key first"),
    "sign_in_to_see": ("解锁密钥并登录后显示。", "Shown after you unlock your key and sign in."),
    "session_expired": ("登录已过期，请重新解锁。", "Your session expired; unlock again."),
    # patient
    "patient_title": ("我的健康数据", "My health data"),
    # an institution's key unlocked on the patient page: said, not silently shown an empty page
    "member_key_title": ("这是机构的密钥", "This is an institution's key"),
    "member_key_help": ("此密钥属于联盟成员 ", "This key belongs to the consortium member "),
    "member_key_help_after": (
        "，不是患者。患者页面只显示该地址作为患者的数据。",
        ", not to a patient. This page shows only the data of that address as a patient.",
    ),
    "member_key_go": ("前往机构页面", "Go to the institution's page"),
    "my_records": ("我的病历", "My records"),
    "no_records": ("还没有登记的病历。", "No records registered yet."),
    "category": ("类别", "Category"),
    "provider": ("机构", "Provider"),
    "registered": ("登记时间", "Registered"),
    "status": ("状态", "Status"),
    "record_active": ("有效", "active"),
    "record_amended": ("已更正", "amended"),
    "record_retracted": ("已撤回", "retracted"),
    "create_code": ("生成健康码（授权）", "Create a health code (consent)"),
    "create_code_help": (
        "选择机构、数据类别、用途和期限。机构扫码后提交上链，授权才生效；您可随时撤销。",
        "Pick the institution, the kinds of data, the purpose and how long. The consent takes "
        "effect when the institution scans and submits it; you can revoke it at any time.",
    ),
    "institution": ("机构", "Institution"),
    "categories": ("数据类别", "Kinds of data"),
    "sensitive": ("敏感", "sensitive"),
    "sensitive_note": (
        "敏感类别需要您单独勾选，请谨慎授权。",
        "Sensitive categories need your explicit tick: share them with care.",
    ),
    "purposes": ("用途", "Purpose"),
    "duration": ("授权期限", "Valid for"),
    "days": ("天", "days"),
    "code_deadline": ("健康码提交期限", "Code must be submitted within"),
    "hours": ("小时", "hours"),
    "sign_and_create": ("签名并生成健康码", "Sign and create the code"),
    "code_ready": ("健康码已生成：请出示给机构扫码", "Your health code: show it to the institution"),
    "download_png": ("下载 PNG", "Download PNG"),
    "download_svg": ("下载 SVG", "Download SVG"),
    "code_text": ("健康码文本（可复制粘贴）", "Code text (to copy and paste)"),
    "pick_category": ("请至少选择一个数据类别", "Pick at least one kind of data"),
    "pick_purpose": ("请至少选择一个用途", "Pick at least one purpose"),
    "my_consents": ("我的授权", "My consents"),
    "no_consents": ("没有授权记录。", "No consents."),
    "valid_from": ("生效", "Valid from"),
    "valid_until": ("截止", "Valid until"),
    "state": ("状态", "State"),
    "revoke": ("撤销", "Revoke"),
    "revoke_named": ("撤销授权：", "Revoke the consent of "),
    "revoked_ok": ("授权已撤销", "Consent revoked"),
    "confirm_revoke": ("确定撤销对该机构的授权吗？", "Revoke this institution's consent?"),
    "state_active": ("有效", "active"),
    "state_revoked": ("已撤销", "revoked"),
    "state_expired": ("已过期", "expired"),
    "state_not yet valid": ("未生效", "not yet valid"),
    "timeline": ("访问记录：谁在何时因何读取了什么", "Access log: who read what, when, why"),
    "no_accesses": ("还没有人读取您的数据。", "Nobody has read your data yet."),
    "older_accesses": ("更早的访问记录", "Older accesses"),
    "time": ("时间", "Time"),
    "reader": ("读取机构", "Reader"),
    "purpose": ("用途", "Purpose"),
    "proof": ("上链证明", "Ledger proof"),
    "emergency": ("急救", "Emergency"),
    "emergency_access": ("紧急访问（破窗）", "Emergency (break-glass) access"),
    "reason": ("原因", "Reason"),
    "journal_entry": ("日志条目", "journal entry"),
    "held_by": ("保存机构", "Held by"),
    "verification_chain_event": ("已在链上核验", "Verified on chain"),
    "verification_anchored_root": ("已核验（链上锚定）", "Verified (anchored on chain)"),
    "verification_not_anchored_yet": ("待锚定", "Not anchored yet"),
    "verification_root_not_on_chain": ("未能证明：该机构未在链上锚定", "Unproven: never anchored by its gateway"),
    "verification_proof_mismatch": ("已被篡改：与链上锚定不符", "Altered: does not match its anchor"),
    "unavailable_holders": (
        "以下机构暂未响应，其记录未列出",
        "These institutions did not answer; their entries are missing",
    ),
    "emergency_windows": ("紧急访问窗口", "Emergency access windows"),
    "guardians": ("监护人", "Guardians"),
    "guardians_help": (
        "监护人可以代您签署授权（例如父母代子女）。",
        "A guardian may sign consents for you (a parent for a child, say).",
    ),
    "no_guardians": ("没有监护人。", "No guardians."),
    "guardian_address": ("监护人地址", "Guardian's address"),
    "guardian_days": ("有效天数", "Valid for (days)"),
    "add_guardian": ("添加监护人", "Add guardian"),
    "remove": ("移除", "Remove"),
    "remove_guardian_named": ("移除监护人：", "Remove the guardian "),
    "optout_title": ("紧急访问", "Emergency access"),
    "optout_on": (
        "您已拒绝紧急访问：急救时机构不能破窗读取您的数据。",
        "You have opted out: in an emergency, institutions cannot break the glass for your data.",
    ),
    "optout_off": (
        "急救时，具备急救资质的机构可在 4 小时内读取过敏、用药、诊断和疫苗信息，并被记录和审查。",
        "In an emergency, institutions with emergency rights may read allergies, medications, "
        "conditions and immunizations for 4 hours, ledgered and reviewed.",
    ),
    "optout_do": ("拒绝紧急访问", "Opt out of emergency access"),
    "optout_undo": ("恢复紧急访问", "Allow emergency access again"),
    "tx_sent": ("交易已上链", "Transaction on the ledger"),
    # hospital
    "hospital_title": ("机构工作台", "Institution desk"),
    "scan_title": ("扫描或粘贴健康码", "Scan or paste a health code"),
    "scan_picture": ("上传健康码图片", "Upload a picture of the code"),
    "use_camera": ("使用摄像头", "Use the camera"),
    "stop_camera": ("关闭摄像头", "Stop the camera"),
    "paste_code": ("或粘贴健康码文本（HCL:…）", "or paste the code text (HCL:…)"),
    "preview": ("预览", "Preview"),
    "submit_code": ("提交上链", "Submit to the ledger"),
    "submitted_ok": ("授权已上链", "Consent is on the ledger"),
    "cannot_submit": ("此健康码不能提交", "This code cannot be submitted"),
    "can_submit": ("可以提交", "Can be submitted"),
    # a code that cannot be read (HealthCodeError.kind), in the page's language
    "colon": ("：", ": "),  # between a title and its detail
    "gender_male": ("男", "male"),
    "gender_female": ("女", "female"),
    "gender_other": ("其他", "other"),
    "gender_unknown": ("未知", "unknown"),
    "hc_invalid": ("不是有效的健康码", "Not a valid health code"),
    "hc_missing": ("请上传健康码图片或粘贴其文本", "Upload a picture of the code or paste its text"),
    "hc_prefix": ("文本应以 HCL: 开头", "the text must start with HCL:"),
    "hc_damaged": ("文本已损坏", "the text is damaged"),
    "hc_length": ("长度不对，可能被截断或多出内容", "wrong length: cut short or padded"),
    "hc_version": ("版本或类型不受支持", "unsupported version or type"),
    "hc_checksum": ("校验和不符，健康码已损坏", "the checksum does not match: the code is damaged"),
    "hc_unreadable_picture": ("无法读取该图片（请使用 PNG 或 JPEG）", "the picture cannot be read (use PNG or JPEG)"),
    "hc_no_code_in_picture": ("图片中没有找到健康码", "no health code was found in the picture"),
    "hc_other": ("无法读取", "it cannot be read"),
    "patient_records": ("患者病历（当前授权范围内）", "A patient's records (under current consents)"),
    "patient_address": ("患者地址", "Patient's address"),
    "find": ("查询", "Find"),
    "open": ("打开", "Open"),
    # each repeated button's accessible name says which row it acts on: "打开：用药与处方 · 某医院"
    "open_named": ("打开：", "Open: "),
    "no_available": ("当前授权下没有可读取的病历。", "No records available under current consents."),
    "consented_categories": ("已授权类别", "Consented categories"),
    "record": ("病历", "Record"),
    "resources": ("内容", "Contents"),
    "decrypted_record": ("已解密病历", "Decrypted record"),
    # the opened record (static/record_view.js)
    "results_title": ("检验与观察结果（按项目，最新在前）", "Results (by test, newest first)"),
    "result_test": ("项目", "Test"),
    "result_latest": ("最新结果", "Latest"),
    "result_range": ("参考范围", "Reference range"),
    "result_date": ("日期", "Date"),
    "result_trend": ("趋势 / 既往", "Trend / earlier"),
    "trend_of": ("趋势", "Trend of"),
    "flag_high": ("偏高", "High"),
    "flag_low": ("偏低", "Low"),
    "flag_abnormal": ("异常", "Abnormal"),
    "medications_title": ("用药（最新在前）", "Medications (newest first)"),
    "med_name": ("药品", "Medication"),
    "med_status": ("状态", "Status"),
    "med_dosage": ("用法用量", "Dosage"),
    "med_dates": ("开具日期 / 有效期", "Prescribed / valid until"),
    "as_needed": ("按需", "as needed"),
    "med_status_active": ("使用中", "active"),
    "med_status_completed": ("已完成", "completed"),
    "med_status_stopped": ("已停用", "stopped"),
    "med_status_cancelled": ("已取消", "cancelled"),
    "med_status_on-hold": ("暂停", "on hold"),
    "med_status_entered-in-error": ("录入错误", "entered in error"),
    "record_other": ("其他内容（最新在前）", "Other entries (newest first)"),
    "raw_fhir": ("原始 FHIR JSON", "Raw FHIR JSON"),
    "need_enc_key": (
        "打开病历需要机构的解密密钥（X25519 JWK）",
        "Opening a record needs the institution's decryption key (X25519 JWK)",
    ),
    "break_glass": ("破窗（紧急访问）", "Break glass (emergency access)"),
    "break_glass_help": (
        "仅限急救。原因必填，链上只记录原因的哈希；患者和审计方会看到这次访问。",
        "Emergencies only. The reason is mandatory; only its hash goes on-chain; the patient and "
        "the auditors will see this access.",
    ),
    "reason_required": ("请填写原因", "Give the reason"),
    "open_window": ("开启 4 小时紧急访问", "Open a 4-hour emergency window"),
    "window_open": ("紧急访问窗口已开启，截止", "Emergency window open until"),
    "summary_type": ("类型", "Type"),
    "summary_patient": ("患者", "Patient"),
    "summary_grantee": ("被授权机构", "Grantee"),
    "summary_signed_by": ("签署人", "Signed by"),
    "summary_signature": ("签名", "Signature"),
    "summary_deadline": ("提交期限", "Submit before"),
    "summary_used": ("是否已使用", "Already used"),
    "summary_ledger": ("链 / 合约", "Chain / contract"),
    "kind_grant": ("授权", "consent grant"),
    "kind_revoke": ("撤销授权", "consent revocation"),
    "signed_patient": ("患者本人", "the patient"),
    "signed_guardian": ("监护人", "a guardian"),
    "guardian_not_current": ("不是患者当前的监护人", "NOT a current guardian of the patient"),
    "sig_valid": ("有效", "valid"),
    "sig_invalid": ("无效", "invalid"),
    "sig_onchain": ("由合约钱包在链上验证", "checked on-chain (contract wallet)"),
    "yes_used": ("是：已使用或已被后续授权/撤销取代", "yes — used or replaced by a later grant/revoke"),
    "no": ("否", "no"),
    "expired": ("已过期", "EXPIRED"),
    "not_this_ledger": ("不是本链", "NOT this ledger"),
    "not_for_you": ("此健康码授权给其他机构，不是您", "This code is for another institution, not you"),
    # problems (gateway.problems.PROBLEMS), shown as the title of a refusal
    "problem_invalid_request": ("请求格式不正确", "The request is malformed"),
    "problem_invalid_fhir": ("FHIR 内容无效", "The FHIR content is invalid"),
    "problem_invalid_signature": ("签名无效", "The signature does not verify"),
    "problem_unauthenticated": ("需要登录", "Authentication is required"),
    "problem_token_expired": ("登录已过期", "The bearer token has expired"),
    "problem_replayed_nonce": ("该签名已被使用或已过期", "The nonce was already used or has expired"),
    "problem_consent_signature_invalid": ("授权签名无效", "The consent's signature does not verify"),
    "problem_consent_signature_expired": (
        "此健康码已超过提交期限",
        "The signed consent's submit-before time has passed",
    ),
    "problem_consent_already_used": (
        "此健康码已被使用，或已被后续授权/撤销取代",
        "This consent was already submitted, or a later one replaced it",
    ),
    "problem_not_member": ("不是联盟的有效成员", "The caller is not an active consortium member"),
    "problem_member_suspended": ("成员资格已暂停", "The caller's membership is suspended"),
    "problem_wrong_role": ("当前身份无权执行此操作", "The caller's role does not allow this"),
    "problem_not_patient": ("只有患者本人或其监护人可以执行此操作", "Only the patient (or a guardian) may do this"),
    "problem_consent_missing": ("没有覆盖此访问的授权", "No consent covers this access"),
    "problem_consent_expired": ("授权已过期或尚未生效", "The consent has expired or is not valid yet"),
    "problem_consent_revoked": ("患者已撤销授权", "The consent was revoked"),
    "problem_wrong_category": ("授权不包含此数据类别", "The consent does not cover this category"),
    "problem_wrong_purpose": ("授权不包含此用途", "The consent does not cover this purpose"),
    "problem_emergency_not_allowed": ("此处不允许紧急访问", "Emergency access is not allowed here"),
    "problem_record_not_found": ("病历不存在", "No such record"),
    "problem_not_found": ("未找到", "Not found"),
    "problem_record_retracted": ("病历已撤回", "The record was retracted"),
    "problem_not_record_holder": (
        "只有登记该病历的网关可以请求保存其副本",
        "Only the gateway that registered a record may ask for replicas of it",
    ),
    "problem_payload_too_large": ("内容过大", "The request body is too large"),
    "problem_unsupported_media_type": ("不支持的内容类型", "Unsupported media type"),
    "problem_chain_rejected": ("区块链拒绝了该交易", "The chain refused the transaction"),
    "problem_integrity_error": ("存储的数据与账本不一致", "Stored data does not match the ledger"),
    "problem_chain_unavailable": ("区块链暂不可用，未发布任何数据", "The chain is unreachable; nothing was released"),
    "problem_storage_unavailable": (
        "存储暂不可用，未发布任何数据",
        "Record storage is unreachable; nothing was released",
    ),
    "problem_journal_unavailable": (
        "访问日志暂不可用，未发布任何数据",
        "The release journal is unavailable; nothing was released",
    ),
    "problem_anchor_lagging": (
        "访问日志未能及时在链上锚定，未发布任何数据",
        "The journal is not being anchored on-chain in time; nothing was released",
    ),
    "problem_catching_up": (
        "网关仍在读取链上历史，请稍后再试",
        "The gateway is still reading the chain's history; ask again shortly",
    ),
    "problem_holder_unavailable": (
        "保存该记录的机构暂不可达，未发布任何数据",
        "The institution holding the record does not answer; nothing was released",
    ),
    "problem_storage_full": ("存储已满", "Record storage is full"),
    "problem_internal_error": ("内部错误", "Internal error"),
    # auditor
    "auditor_title": ("审计概览", "Audit overview"),
    "ledger_activity": ("账本活动", "Ledger activity"),
    "members": ("成员机构", "Members"),
    "consents_count": ("授权（含历史）", "Consents (incl. history)"),
    "records_count": ("病历", "Records"),
    "strict_accesses": ("逐笔上链访问", "Strict (per-access) ledger entries"),
    "journal_entries": ("批量日志条目", "Batch journal entries"),
    "anchors": ("链上 Merkle 锚点", "Merkle anchors on-chain"),
    "review_emergency": ("待审查的紧急访问", "Emergency accesses to review"),
    "no_emergency": ("没有紧急访问。", "No emergency accesses."),
    "per_institution": ("各机构访问次数", "Accesses per institution"),
    "accesses": ("访问次数", "Accesses"),
    "replay_reports": ("账本重放审计报告", "Ledger replay reports"),
    "no_reports": (
        "还没有报告。运行 hcl audit replay --out 到报告目录：",
        "No reports yet. Run hcl audit replay with --out in the reports folder:",
    ),
    "verdict": ("结论", "Verdict"),
    # errors
    "forbidden_role": ("此页面需要以下身份：", "This page needs the role: "),
    "error": ("出错了", "Something went wrong"),
    "working": ("处理中…", "Working…"),
    "tx": ("交易", "transaction"),
    "block": ("区块", "block"),
    "from": ("发送方", "from"),
    "events": ("事件", "Events"),
    "tx_title": ("链上交易", "Ledger transaction"),
    "not_found": ("未找到", "Not found"),
    "page_not_found": (
        "没有这个页面：地址可能有误，或页面已移走。",
        "There is no such page: the address may be mistyped, or the page has moved.",
    ),
    # the ledger-proof page in words (proof.py)
    "proof_verdict_access": (
        "此次访问已记录在联盟链第 {block} 号区块中；已验证。",
        "This access is in block {block} of the consortium ledger; verified.",
    ),
    "proof_verdict_tx": (
        "此交易已记录在联盟链第 {block} 号区块中；已验证。",
        "This transaction is in block {block} of the consortium ledger; verified.",
    ),
    "proof_not_verified": (
        "未能验证：该交易执行失败，或其中没有本联盟合约的记录。",
        "Not verified: the transaction failed or holds no record of this consortium's contracts.",
    ),
    "technical_detail": ("技术细节（原始事件数据）", "Technical detail (raw event data)"),
    "yes": ("是", "yes"),
    "arg_requester": ("访问机构", "Institution that read it"),
    "arg_patient": ("患者", "Patient"),
    "arg_grantee": ("被授权机构", "Institution granted"),
    "arg_member": ("机构", "Institution"),
    "arg_signer": ("签署人", "Signed by"),
    "arg_guardian": ("监护人", "Guardian"),
    "arg_provider": ("提供机构", "Provider"),
    "arg_gateway": ("托管网关", "Holding gateway"),
    "arg_emergency": ("紧急访问", "Emergency access"),
    "arg_validFrom": ("生效时间", "Valid from"),
    "arg_validUntil": ("有效期至", "Valid until"),
    "event_AccessLogged": ("病历被读取", "A record was read"),
    "event_ConsentGranted": ("授权已生效", "Consent granted"),
    "event_ConsentRevoked": ("授权已撤销", "Consent revoked"),
    "event_EmergencyAccessGranted": ("紧急访问窗口已开启", "Emergency access opened"),
    "event_EmergencyOptOutSet": ("紧急访问偏好已更改", "Emergency access preference changed"),
    "event_GuardianSet": ("已指定监护人", "Guardian named"),
    "event_GuardianRemoved": ("已移除监护人", "Guardian removed"),
    "event_RecordRegistered": ("病历已登记", "Record registered"),
    "back_to_portal": ("返回首页", "Back to the portal's start page"),
    "back": ("返回", "Back"),
    # exports and portal upload (issue 17): the patient's downloads, the institution's FHIR upload form
    "exports_title": ("下载我的数据", "Download my data"),
    "exports_help": (
        "您的访问记录和授权，可下载为表格（Excel 可直接打开）、可打印的网页，或供医疗系统导入的 FHIR 文件。",
        "Your access history and your consents as a spreadsheet (opens in Excel), a printable page, or a FHIR "
        "file for a hospital system.",
    ),
    "exports_access-log": ("访问记录", "Access history"),
    "exports_consents": ("授权", "Consents"),
    "exports_csv": ("表格（CSV）", "Spreadsheet (CSV)"),
    "exports_html": ("可打印网页（HTML）", "Printable page (HTML)"),
    "exports_fhir": ("FHIR 数据包（JSON）", "FHIR Bundle (JSON)"),
    "upload_title": ("上传病历（FHIR）", "Upload records (FHIR)"),
    "upload_help": (
        "选择一个 FHIR R4 JSON 文件（资源或 Bundle）。网关校验后按数据类别分成病历，加密保存并在链上登记。",
        "Choose a FHIR R4 JSON file (a resource or a Bundle). The gateway validates it, splits it into records "
        "by data category, encrypts and stores them and registers them on the ledger.",
    ),
    "upload_file": ("FHIR 文件（JSON）", "FHIR file (JSON)"),
    "upload_button": ("上传", "Upload"),
    "choose_fhir_file": ("请先选择 FHIR 文件", "Choose a FHIR file first"),
    "uploaded_title": ("已上传 {n} 份病历", "{n} record(s) uploaded"),
    "uploaded_ledger": ("链上登记", "Registered on the ledger"),
    "uploaded_ignored": ("未保存的资源", "Resources not stored"),
    "upload_resources": ("{n} 个资源", "{n} resource(s)"),
    "upload_problems": ("问题所在位置", "Where the problems are"),
    "upload_issue_count": ("发现 {n} 个问题（校验器原文为英文）：", "{n} issue(s) found:"),
    # paged discovery: the hospital page's record list loads a page at a time
    "more_records": ("更多病历", "More records"),
    # auditors' reviews of emergency accesses (auditor page, /v1/emergency-reviews)
    "unreviewed_count": ("待审核紧急访问：{n}", "Unreviewed emergency accesses: {n}"),
    "review_state": ("审核", "Review"),
    "not_reviewed": ("未审核", "Not reviewed"),
    "review_this": ("审核此紧急访问", "Review this emergency access"),
    "review_verdict": ("审核结论", "Verdict"),
    "review_note": ("审核说明", "Note"),
    "sign_review": ("签名并提交审核", "Sign and submit the review"),
    "verdict_justified": ("合理", "Justified"),
    "verdict_unjustified": ("不合理", "Unjustified"),
    "verdict_needs-follow-up": ("需跟进", "Needs follow-up"),
    "review_anchored": ("已上链锚定", "anchored on chain"),
    "review_not_anchored": ("尚未锚定", "not anchored yet"),
    "review_saved": ("审核已签名并保存", "The review is signed and kept"),
    "review_hash_mismatch": (
        "网关给出的说明哈希与本页计算的不同，未签名",
        "The gateway's hash of the note differs from this page's; nothing was signed",
    ),
    "problem_review_signature_invalid": (
        "审核的签名、签名人或说明无法验证",
        "The review's signature, signer or note does not verify",
    ),
    "problem_emergency_access_unknown": ("没有这次紧急访问", "No such emergency access"),
    "problem_already_reviewed": ("您已审核过这次紧急访问", "This auditor already reviewed this emergency access"),
    "event_EmergencyReviewsAnchored": ("紧急访问审核已锚定", "Emergency access reviews anchored"),
    # notifications: the patient page's live access timeline
    "live_new_access": ("新的访问：{who} 读取了 {what}", "New access: {who} read {what}"),
    "live_new_emergency": ("紧急访问：{who} 读取了 {what}", "Emergency access: {who} read {what}"),
    "live_record": ("一份病历", "a record"),
    "live_following": ("正在实时显示新的访问", "New accesses appear here as they happen"),
    "live_new_badge": ("新", "New"),
    "problem_invalid_webhook_url": (
        "Webhook 地址须为完整的 http(s) 地址",
        "The webhook URL is not an absolute http(s) URL",
    ),
    # ---- idempotent uploads and the identifier lookup (issue 16) ----
    "uploaded_unchanged": ("{n} 份病历已在网关，未重复保存", "{n} record(s) already held, not stored again"),
    "uploaded_amends": ("新版本，替代", "new version of"),
    "problem_patient_not_found": ("未找到您可查询的患者", "No patient you may look up has this identifier"),
    "lookup_title": ("凭证件号查找患者", "Find a patient by ID"),
    "lookup_help": (
        "需患者对“身份标识”类别的有效授权；每次查找都会像调阅一样记入患者的访问记录。",
        "Needs the patient's current consent for identifiers; every lookup is ledgered in her access history "
        "like a record read.",
    ),
    "lookup_system": ("证件类型（系统 URI，或 phone）", "ID system (a URI, or phone)"),
    "lookup_value": ("证件号码", "ID number"),
    "lookup_button": ("查找患者", "Find patient"),
    "lookup_found": ("已找到患者，地址已填入", "Patient found; her address is filled in"),
    # ---- blinded categories: the patient's category key (issue 16)
    "problem_category_key_invalid": ("类别密钥不是患者本人签署的", "The category key is not signed by the patient"),
    "problem_category_key_needed": (
        "本网关尚无该患者的类别密钥：请患者登录本机构门户一次，或出示携带密钥的健康码",
        "This gateway does not hold the patient's category key: she signs in to this portal once, or shows a "
        "health code that carries it",
    ),
    "problem_category_key_conflict": (
        "本网关已保存该患者的另一把类别密钥",
        "This gateway holds another category key for the patient",
    ),
    "slot_n": ("受保护类别 {n}", "Protected category {n}"),
    # health code version 2: the patient's category key carried in a grant (blinded categories, issue 16)
    "hc_category_key": (
        "码中附带的类别密钥不是该患者本人的",
        "the category key in the code is not the patient's own",
    ),
    # a guardian makes a health code for her ward (the ward's key held by this gateway names her slots)
    "wards_title": ("我的被监护人", "My wards"),
    "wards_help": (
        "您是这些患者当前的监护人：可以查看并撤销其授权，并查看谁读取了其数据。",
        "You are these patients' current guardian: you see and may revoke their consents, and see who read their data.",
    ),
    "wards_consents": ("其授权", "Their consents"),
    "wards_latest": ("最近的读取记录", "Latest accesses"),
    "wards_no_accesses": ("还没有人读取其数据。", "Nobody has read their data yet."),
    "code_for": ("为谁授权", "For whom"),
    "code_for_me": ("我本人", "Myself"),
    "code_for_ward": ("被监护人", "My ward"),
    "code_for_help": (
        "您是这些患者当前的监护人，可以代其签署授权。敏感类别需要本网关持有被监护人的类别密钥。",
        "You are these patients' current guardian and may sign consents for them. A sensitive category needs "
        "this gateway to hold your ward's category key.",
    ),
}

#: FHIR resource types as a reader of that language names them (the opened record, the records table);
#: a type not listed shows as FHIR names it
FHIR_TYPES: dict[str, tuple[str, str]] = {
    "AllergyIntolerance": ("过敏与不耐受", "Allergy or intolerance"),
    "CarePlan": ("诊疗计划", "Care plan"),
    "CareTeam": ("诊疗团队", "Care team"),
    "Composition": ("临床文书", "Clinical document"),
    "Condition": ("诊断", "Condition"),
    "Device": ("医疗器械", "Device"),
    "DiagnosticReport": ("检查报告", "Diagnostic report"),
    "DocumentReference": ("文档", "Document"),
    "Encounter": ("就诊", "Encounter"),
    "Goal": ("治疗目标", "Goal"),
    "ImagingStudy": ("影像检查", "Imaging study"),
    "Immunization": ("疫苗接种", "Immunization"),
    "MedicationAdministration": ("用药记录", "Medication given"),
    "MedicationDispense": ("发药记录", "Medication dispensed"),
    "MedicationRequest": ("处方", "Prescription"),
    "MedicationStatement": ("用药情况", "Medication statement"),
    "Observation": ("观察结果", "Observation"),
    "Patient": ("患者", "Patient"),
    "Procedure": ("操作与手术", "Procedure"),
    "ServiceRequest": ("检查申请", "Service request"),
}
MESSAGES.update({f"fhir_{name}": names for name, names in FHIR_TYPES.items()})


def negotiate(request: Request) -> str:
    """``?lang=`` wins (and is remembered in a cookie), then the cookie, then the default (zh-CN)."""
    for value in (request.query_params.get("lang"), request.cookies.get(COOKIE)):
        if value in LANGS:
            return value
    return DEFAULT


@functools.cache
def translator(lang: str) -> Callable[[str], str]:
    """``t(key)`` in ``lang``; an unknown key renders as itself (a test keeps that from shipping)."""
    index = 0 if lang == "zh-CN" else 1

    def t(key: str) -> str:
        entry = MESSAGES.get(key)
        return entry[index] if entry else key

    return t


_CATEGORY_OF = {t.slug: t for t in CATEGORIES}


def category_term(name: str) -> Term | TermView:
    """A category as the API and ``category_keys`` name a slot (a slug, or ``slot-N``), labelled in both
    languages: pages show these names, never ``CATEGORIES`` indexed by a slot."""
    if name in _CATEGORY_OF:
        return _CATEGORY_OF[name]
    zh, en = MESSAGES["slot_n"]
    n = name.removeprefix("slot-")
    return TermView(name, en.format(n=n), zh.format(n=n))  # a blinded slot without the key


@functools.cache
def js_messages(lang: str) -> dict[str, str]:
    """The whole catalog in ``lang``, for the page script (a few KB; built once per language)."""
    t = translator(lang)
    return {key: t(key) for key in MESSAGES}
