//! Code extraction over a corpus of realistic messages (written for this test; none is a real
//! message). Each row: the message and the code that must come out, or `None`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use credvault_totp::{extract_code, Reason};

const CORPUS: &[(&str, Option<&str>)] = &[
    // Plain SMS
    ("Your verification code is 482913", Some("482913")),
    ("482913 is your Acme verification code. Don't share it.", Some("482913")),
    ("Use 771204 to sign in to Contoso. Expires in 5 min.", Some("771204")),
    ("G-582913 is your Google verification code.", Some("G-582913")),
    ("Your code: 123-456", Some("123456")),
    ("Your login code is 031 448", Some("031448")),
    ("Your one-time passcode is 90817265", Some("90817265")),
    ("Amazon: Your OTP is 6421. Do not share this OTP with anyone.", Some("6421")),
    ("[Bank] Security code 558201 for your transfer. Call 1-800-555-0199 if this wasn't you.", Some("558201")),
    ("Your PIN reset code is 7390", Some("7390")),
    ("Verify your phone with code 204-877. Questions? +1 (415) 555-0134", Some("204877")),
    ("WhatsApp code 309-114. You can also tap on this link to verify your phone: v.whatsapp.com/309114", Some("309114")),
    ("Dein Bestätigungscode lautet 553120.", Some("553120")),
    ("Tu código de verificación es 448102", Some("448102")),
    ("Votre code de vérification est : 661290", Some("661290")),
    ("Il tuo codice di verifica è 773310", Some("773310")),
    ("Seu código de verificação é 118542", Some("118542")),
    ("Uw verificatiecode is 902441", Some("902441")),
    ("Ваш код подтверждения: 560981", Some("560981")),
    ("【腾讯】验证码 482017，5分钟内有效。", Some("482017")),
    ("認証コード：330918 を入力してください", Some("330918")),
    ("481516", Some("481516")),
    ("Code: K7Q2ZX", Some("K7Q2ZX")),
    // Email subject lines and bodies
    ("Subject: 238411 is your Slack confirmation code\n\nConfirm your email address by entering the code.", Some("238411")),
    ("Subject: Your sign-in code\n\nHi Sam,\nUse the code below to sign in:\n\n  804 213\n\nIf you did not request this, ignore this email. Order questions? Call 555-0100.", Some("804213")),
    ("Subject: Security alert\n\nYour verification code is 615090. It expires at 14:30 on 2024-05-12.", Some("615090")),
    ("<html><body><p>Hello,</p><p>Your verification code is <b>772910</b></p><p>Thanks,<br>The Team</p></body></html>", Some("772910")),
    ("<div style=\"font-size:32px\">Your one-time code</div><div><span>4</span>&nbsp;</div><table><tr><td>Code:</td><td><strong>390127</strong></td></tr></table>", Some("390127")),
    ("<p>Enter this code to continue: <code>PQ8M4R</code></p><p>Account 88319204</p>", Some("PQ8M4R")),
    ("Hi! Your Acme login code is 551923. For your security, it expires in 10 minutes. Ref: 20240512-7781", Some("551923")),
    // Decoys next to a real code
    ("Order #448192 shipped! Your delivery verification code is 3391.", Some("3391")),
    ("Total charged: $1,284.00. Approve with code 662018", Some("662018")),
    ("Tracking number 9400111899223344556677. Pickup PIN: 8842", Some("8842")),
    ("Meeting at 10:30 in room 4012. Your door code is 7719", Some("7719")),
    // Messages with no code
    ("Your order #448192 has shipped and will arrive on 12/05/2024.", None),
    ("Call us at +1 (800) 555-0199 or 800-555-0199 for support.", None),
    ("Your invoice 2024-0042 for $129.99 is ready.", None),
    ("Hi Sam, lunch at 12:30? I'm in room 4012.", None),
    ("Your package tracking number is 1Z999AA10123456784", None),
    ("Thanks for your payment of 1,250.00 EUR on account 55120943.", None),
    ("Version 2.14.3 is now available. Build 20240512.", None),
    ("Your appointment is confirmed for 2024-05-12 at 09:45.", None),
    ("Commit 3f9a2c1 merged into main (PR #4521).", None),
    ("Welcome to Acme! Reply STOP to unsubscribe.", None),
    ("Flight UA 1234 departs 18:45 from gate 22. Booking reference ABC123X.", None),
    ("", None),
];

#[test]
fn corpus() {
    assert!(CORPUS.len() >= 40, "{} messages", CORPUS.len());
    let mut failures = Vec::new();
    for (msg, expected) in CORPUS {
        let got = extract_code(msg).map(|e| e.code);
        if got.as_deref() != *expected {
            failures.push(format!("{msg:?}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} wrong:\n{}",
        failures.len(),
        CORPUS.len(),
        failures.join("\n")
    );
}

#[test]
fn reasons() {
    assert_eq!(
        extract_code("Your code is 123456").unwrap().reason,
        Reason::NearCodeWord
    );
    assert_eq!(
        extract_code("Subject: 123456 is your code\n\nhello")
            .unwrap()
            .reason,
        Reason::SubjectLine
    );
    assert_eq!(
        extract_code("481516").unwrap().reason,
        Reason::OnlyCandidate
    );
}
